/*
 * wa-writer: drains the ngx_wa ring into PostgreSQL.
 *
 * One process, one thread, one connection. The ring is read from a private
 * cursor; a batch is written in one transaction and the ring's head moves
 * only after COMMIT, so a crash at any point replays, never loses.
 */

#ifndef WA_WRITER_H
#define WA_WRITER_H

#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "wa_record.h"
#include "wa_ring.h"
#include "wa_utf8.h"


#define WA_EXIT_OK        0
#define WA_EXIT_FAIL      1
#define WA_EXIT_USAGE     2


/* settings: command line over environment over defaults */

typedef enum {
    WA_CMD_RUN = 0,
    WA_CMD_MIGRATE,
    WA_CMD_STATUS,
    WA_CMD_BACKFILL,
    WA_CMD_MEDIA,
    WA_CMD_DEAD_LETTERS
} wa_cmd_e;

typedef struct {
    wa_cmd_e      cmd;
    const char   *ring_path;
    const char   *dsn;              /* NULL: libpq's PG* variables */
    uint64_t      ring_size;        /* 0: wait for nginx to create it */
    unsigned      batch_size;
    unsigned      batch_delay_ms;
    unsigned      idle_ms;
    unsigned      backoff_max_ms;
    unsigned      backfill_batch;
    unsigned      runs;             /* shortest run for a set statement, 0:
                                       none (wa_set.c) */
    /* media: the fetcher (wa_media.c) */
    const char   *media_dir;
    const char   *media_url;        /* nginx's wa_media_fetch location */
    const char   *media_key;        /* its X-WA-Key; never logged */
    unsigned      media_give_up_sec;
    unsigned      media_timeout_ms;
    unsigned      media_retry_ms;   /* first retry's wait, then doubled */
    unsigned      census_ms;        /* count what waits in the database
                                       this often for wa_status; 0: never */
    unsigned      json:1;           /* dead-letters: --json */
    unsigned      all:1;            /* dead-letters: --all */
    char        **args;             /* dead-letters: ACTION [ID...] */
    int           nargs;
    unsigned      pending_warn_s;   /* a parked receipt older than this is
                                       reported once (wa_sweep.c) */
    unsigned      hold_replicated;  /* the ring's head waits for standbys
                                       (wa_standby.c) */
} wa_conf_t;

/* fills conf from argv and the environment; WA_EXIT_OK, WA_EXIT_USAGE after
 * printing why, or -1 when usage was printed on request (--help) */
int wa_conf_parse(wa_conf_t *conf, int argc, char **argv);
void wa_conf_usage(FILE *stream);


/* logging: one line per event on stderr */

typedef enum {
    WA_LOG_INFO = 0,
    WA_LOG_WARN,
    WA_LOG_ERROR,
    WA_LOG_CRITICAL
} wa_log_level_e;

void wa_log(wa_log_level_e level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));



/* text helpers */

typedef struct {
    char         *data;             /* NUL-terminated when len > 0 */
    size_t        len;
    size_t        size;
} wa_buf_t;

/* copy src to dst as one printable line: control characters become spaces,
 * bytes that are not UTF-8 become \xNN; at most size - 1 bytes */
size_t wa_sanitize(char *dst, size_t size, const char *src, size_t len);
int wa_buf_reserve(wa_buf_t *b, size_t more);
int wa_buf_add(wa_buf_t *b, const char *s, size_t len);
int wa_buf_json_escape(wa_buf_t *b, const char *src, size_t len);


/* PostgreSQL connection */

typedef struct {
    PGconn       *conn;
    const char   *dsn;
    int           ready;            /* statements prepared */
    unsigned      generation;       /* connections made so far: a new one
                                       may be another server */
    int           logged_down;      /* connection failure already logged */
    int           warned_schema;
    Oid           set_types[4];     /* the row types of the set statements
                                       (wa_set.c), looked up at prepare */
    char          where[256];       /* host/port/dbname, never a password */
    char          sqlstate[6];      /* of the last error, "" if none */
    char          error[1024];      /* last error, one line */
} wa_db_t;

/* a libpq conninfo or URI; 0, or -1 with a safe message in err */
int wa_db_check_dsn(const char *dsn, char *err, size_t errlen);
/* connect; 0 or -1 with db->error set */
int wa_db_connect(wa_db_t *db);
void wa_db_close(wa_db_t *db);
/* record res's (or the connection's) error in db->error and db->sqlstate */
void wa_db_set_error(wa_db_t *db, const PGresult *res, const char *what);
/* the newest migration this binary carries */
const char *wa_db_schema_version(void);
/* check the schema and prepare the ingest statements; 0 or -1 */
int wa_db_prepare(wa_db_t *db);
/* the prepared statement of a record type and the fields it takes */
const char *wa_db_stmt(uint16_t type, int *nfields, const int **fields);
/* the most parameters an ingest statement takes (a media upload's 17) */
#define WA_DB_PARAMS_MAX  20
/* its parameters from a decoded record (at most WA_DB_PARAMS_MAX); the
 * statement's name, or NULL for a type with none */
const char *wa_db_record_params(const wa_record_t *rec, int *n,
    const char **values, int *lengths, int *formats);


/* a batch: records read from the ring, not committed yet */

typedef enum {
    WA_OUT_NONE = 0,
    WA_OUT_OK,
    WA_OUT_DUPLICATE,
    WA_OUT_PENDING,          /* receipt kept until its message arrives */
    WA_OUT_IGNORED,
    WA_OUT_LEAD_MISSING,
    WA_OUT_CLIENT_REF_TAKEN,
    WA_OUT_DEAD              /* stored in wa_dead_letter */
} wa_outcome_e;

typedef struct {
    uint64_t              pos;      /* ring position of the record */
    uint64_t              end;      /* cursor after it */
    const unsigned char  *payload;  /* in the ring mapping */
    uint32_t              len;
    uint32_t              claim_sec;
    uint16_t              type;
    unsigned              dead:1;   /* write it to wa_dead_letter */
    unsigned              outcome:4;
    char                  sqlstate[6];
    char                 *reason;   /* why it is dead, malloc'ed */
    wa_record_t           rec;
} wa_item_t;

/* runs of inbound messages, of statuses and of sends and their outcomes
 * go to a set function: one parameter, an array of the run's row type
 * (sql/schema/011_record_types.sql), of at most WA_SET_COLS fields */
#define WA_SET_COLS   24

/* one statement of a pipeline: items [first, first + n) */
typedef struct {
    unsigned      first;
    unsigned      n;
} wa_cmd_t;

typedef struct {
    wa_item_t    *items;
    wa_cmd_t     *cmds;             /* the pipeline being read back */
    wa_buf_t      run;              /* the array of a run's records */
    unsigned      n;
    unsigned      cap;
    unsigned      done;             /* items [0, done) are committed */
    unsigned      runs;             /* conf->runs */
    unsigned      one_by_one;       /* a record was refused: no more runs */
    unsigned      dead;             /* dead-lettered */
    uint64_t      first_pos;
    uint64_t      end_pos;          /* cursor after the last record */
    uint64_t      first_ms;         /* when its first record was read */
} wa_batch_t;

int wa_batch_init(wa_batch_t *b, unsigned cap);
void wa_batch_free(wa_batch_t *b);
void wa_batch_reset(wa_batch_t *b);
/* append a record read from the ring; decodes it (a record that does not
 * decode is marked dead) */
wa_item_t *wa_batch_add(wa_batch_t *b, const wa_ring_rec_t *rr,
    uint64_t end);

/* write the uncommitted part of the batch: 0 when all of it is committed,
 * -1 on a failure worth retrying (db->error says why). Records PostgreSQL
 * rejects for good are dead-lettered on the way. */
int wa_flush(wa_db_t *db, wa_batch_t *b);

/* runs written by one set statement each (wa_set.c) */
unsigned wa_set_run(const wa_batch_t *b, unsigned from, unsigned to);
int wa_set_send(wa_db_t *db, wa_batch_t *b, unsigned from, unsigned to);
int wa_set_prepare(wa_db_t *db);


/* parked receipts (wa_sweep.c): apply those whose message a concurrent
 * transaction stored; report, once each, those parked longer than
 * warn_s. 0, or -1 with db->error set. */
int wa_sweep(wa_db_t *db, unsigned *applied);
int wa_sweep_overdue(wa_db_t *db, unsigned warn_s, unsigned *warned);


/* where the last commit and the standbys are in the WAL (wa_standby.c) */
int wa_standby_lsn(wa_db_t *db, uint64_t *committed, uint64_t *flushed,
    unsigned *standbys);


/* best-effort JSON of a record's fields, for wa_dead_letter; malloc'ed */
char *wa_render_json(const wa_record_t *rec, uint16_t type, uint64_t pos);
const char *wa_field_name(int tag);
/* short "business 1 wamid X" identification for log lines */
void wa_render_ident(char *buf, size_t size, const wa_record_t *rec);


/* subcommands */

int wa_daemon(wa_conf_t *conf);      /* run: the daemon loop */
int wa_migrate(wa_conf_t *conf);
int wa_show(wa_conf_t *conf);        /* status: the ring header */
int wa_backfill(wa_conf_t *conf);
int wa_media(wa_conf_t *conf);       /* media: the fetcher of inbound media */
int wa_dead_letters(wa_conf_t *conf);   /* list, show, replay */


/* SQL embedded at build time (writer/embed-sql.sh): the schema
 * migrations of sql/schema/, applied once each and never edited, and the
 * function files of sql/functions/, applied again whenever they change */

typedef struct {
    const char   *version;          /* file name without .sql */
    const char   *path;             /* sql/schema/001_schema.sql */
    const char   *sql;
    size_t        len;
} wa_migration_t;

extern const wa_migration_t  wa_migrations[];
extern const size_t          wa_migrations_n;
extern const wa_migration_t  wa_functions[];
extern const size_t          wa_functions_n;


/* set by signal handlers */
extern volatile sig_atomic_t  wa_stop;
extern volatile sig_atomic_t  wa_hup;

void wa_sleep_ms(unsigned ms);

#endif /* WA_WRITER_H */
