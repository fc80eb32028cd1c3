/*
 * Settings: the subcommand, then options; WA_* environment variables fill
 * in what the command line leaves out. A bad value is refused at start
 * with a message naming the option, never clamped silently.
 */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wa_writer.h"


enum {
    WA_OPT_RING = 256,
    WA_OPT_DB,
    WA_OPT_BATCH_SIZE,
    WA_OPT_BATCH_DELAY,
    WA_OPT_IDLE,
    WA_OPT_BACKOFF_MAX,
    WA_OPT_RING_SIZE,
    WA_OPT_BATCH,
    WA_OPT_RUNS,
    WA_OPT_MEDIA_DIR,
    WA_OPT_MEDIA_URL,
    WA_OPT_MEDIA_KEY,
    WA_OPT_MEDIA_GIVE_UP,
    WA_OPT_MEDIA_TIMEOUT,
    WA_OPT_MEDIA_RETRY,
    WA_OPT_CENSUS,
    WA_OPT_JSON,                    /* flags: no value */
    WA_OPT_ALL,
    WA_OPT_PENDING_WARN,
    WA_OPT_HOLD_REPLICATED,
    WA_OPT_HELP
};


typedef struct {
    const char  *name;
    int          opt;
    const char  *env;
    unsigned     cmds;              /* bit per wa_cmd_e */
} wa_opt_t;


#define WA_C(cmd)  (1u << (cmd))

static const wa_opt_t  wa_opts[] = {
    { "ring", WA_OPT_RING, "WA_RING", WA_C(WA_CMD_RUN) | WA_C(WA_CMD_STATUS) },
    { "db", WA_OPT_DB, "WA_DB",
      WA_C(WA_CMD_RUN) | WA_C(WA_CMD_MIGRATE) | WA_C(WA_CMD_BACKFILL)
      | WA_C(WA_CMD_MEDIA) | WA_C(WA_CMD_DEAD_LETTERS) },
    /* per transaction, one spelling: records (run), rows (backfill-leads);
     * a name's entries are next to each other */
    { "batch-size", WA_OPT_BATCH_SIZE, "WA_BATCH_SIZE", WA_C(WA_CMD_RUN) },
    { "batch-size", WA_OPT_BATCH, "WA_BACKFILL_BATCH",
      WA_C(WA_CMD_BACKFILL) },
    { "batch-delay-ms", WA_OPT_BATCH_DELAY, "WA_BATCH_DELAY_MS",
      WA_C(WA_CMD_RUN) },
    { "idle-ms", WA_OPT_IDLE, "WA_IDLE_MS", WA_C(WA_CMD_RUN) },
    { "backoff-max-ms", WA_OPT_BACKOFF_MAX, "WA_BACKOFF_MAX_MS",
      WA_C(WA_CMD_RUN) | WA_C(WA_CMD_MEDIA) },
    { "ring-size", WA_OPT_RING_SIZE, "WA_RING_SIZE", WA_C(WA_CMD_RUN) },
    { "batch", WA_OPT_BATCH, NULL, WA_C(WA_CMD_BACKFILL) },  /* old name */
    { "runs", WA_OPT_RUNS, "WA_RUNS", WA_C(WA_CMD_RUN) },
    { "census-ms", WA_OPT_CENSUS, "WA_CENSUS_MS", WA_C(WA_CMD_RUN) },
    { "media-dir", WA_OPT_MEDIA_DIR, "WA_MEDIA_DIR", WA_C(WA_CMD_MEDIA) },
    { "media-url", WA_OPT_MEDIA_URL, "WA_MEDIA_URL", WA_C(WA_CMD_MEDIA) },
    { "media-key", WA_OPT_MEDIA_KEY, "WA_MEDIA_KEY", WA_C(WA_CMD_MEDIA) },
    { "media-give-up-after", WA_OPT_MEDIA_GIVE_UP, "WA_MEDIA_GIVE_UP_AFTER",
      WA_C(WA_CMD_MEDIA) },
    { "media-timeout-ms", WA_OPT_MEDIA_TIMEOUT, "WA_MEDIA_TIMEOUT_MS",
      WA_C(WA_CMD_MEDIA) },
    { "media-retry-ms", WA_OPT_MEDIA_RETRY, "WA_MEDIA_RETRY_MS",
      WA_C(WA_CMD_MEDIA) },
    { "json", WA_OPT_JSON, NULL, WA_C(WA_CMD_DEAD_LETTERS) },
    { "all", WA_OPT_ALL, NULL, WA_C(WA_CMD_DEAD_LETTERS) },
    { "pending-warn-after", WA_OPT_PENDING_WARN, "WA_PENDING_WARN_AFTER",
      WA_C(WA_CMD_RUN) },
    { "hold-until-replicated", WA_OPT_HOLD_REPLICATED,
      "WA_HOLD_UNTIL_REPLICATED", WA_C(WA_CMD_RUN) },
    { NULL, 0, NULL, 0 }
};

static const char  *wa_cmd_names[] = {
    "run", "migrate", "status", "backfill-leads", "media", "dead-letters"
};


static int wa_conf_set(wa_conf_t *conf, int opt, const char *value,
    const char *from);
static int wa_conf_uint(const char *value, const char *from, unsigned min,
    unsigned max, unsigned *out);
static int wa_conf_size(const char *value, const char *from, uint64_t *out);
static int wa_conf_duration(const char *value, const char *from,
    unsigned *out);


void
wa_conf_usage(FILE *stream)
{
    fprintf(stream,
"usage: wa-writer [run] --ring PATH [--db DSN] [options]\n"
"       wa-writer migrate [--db DSN]\n"
"       wa-writer status --ring PATH\n"
"       wa-writer backfill-leads [--db DSN] [--batch-size N]\n"
"       wa-writer media --media-dir DIR --media-url URL [--db DSN] [options]\n"
"       wa-writer dead-letters list [--all] [--json] [--db DSN]\n"
"       wa-writer dead-letters show ID [--json] [--db DSN]\n"
"       wa-writer dead-letters replay (ID... | --all) [--db DSN]\n"
"\n"
"Drains the ngx_wa ring into PostgreSQL; the ring's cursor moves only\n"
"after COMMIT. DSN is a libpq connection string or URI; without --db the\n"
"PG* environment variables (PGHOST, PGDATABASE, ...) are used.\n"
"\n"
"run options:\n"
"  --ring PATH            the ring file (nginx's wa_ring)          [WA_RING]\n"
"  --db DSN               PostgreSQL to write to                   [WA_DB]\n"
"  --batch-size N         records per transaction, 1-100000 (1000)\n"
"                                                          [WA_BATCH_SIZE]\n"
"  --batch-delay-ms MS    longest wait to fill a batch, 0-60000 (20)\n"
"                                                      [WA_BATCH_DELAY_MS]\n"
"  --idle-ms MS           poll interval of an empty ring, 1-1000 (2)\n"
"                                                             [WA_IDLE_MS]\n"
"  --backoff-max-ms MS    longest wait between retries of a failed flush,\n"
"                         100-3600000 (5000)              [WA_BACKOFF_MAX_MS]\n"
"  --ring-size BYTES      create the ring with this size (k/m/g suffixes,\n"
"                         a power of two) when it is missing; without it,\n"
"                         wait for nginx to create it          [WA_RING_SIZE]\n"
"  --runs N               write each run of N or more records of one kind\n"
"                         (inbound messages, statuses, sends and their\n"
"                         outcomes) with one set statement; 0: every\n"
"                         record on its own (16)                    [WA_RUNS]\n"
"  --census-ms MS         how often to count the dead letters and receipts\n"
"                         waiting in PostgreSQL for wa_status, 0-3600000;\n"
"                         0: never (5000)                      [WA_CENSUS_MS]\n"
"  --pending-warn-after T a receipt parked this long without its message\n"
"                         is logged once (WARN) and counted; it stays\n"
"                         parked. Seconds, or with s, m, h, d; 1s-365d\n"
"                         (10m)                        [WA_PENDING_WARN_AFTER]\n"
"  --hold-until-replicated on|off\n"
"                         keep committed records in the ring until every\n"
"                         streaming standby has flushed them, and write\n"
"                         them again if the connection is lost first: no\n"
"                         loss when asynchronous replication fails over\n"
"                         (off)                     [WA_HOLD_UNTIL_REPLICATED]\n"
"\n"
"backfill-leads options:\n"
"  --batch-size N         rows per transaction, 1-100000 (1000)\n"
"                                                      [WA_BACKFILL_BATCH]\n"
"  --batch N              the same, its old spelling\n"
"\n"
"media options (the fetcher of inbound media):\n"
"  --media-dir DIR        where files are kept: nginx's wa_media_path\n"
"                                                           [WA_MEDIA_DIR]\n"
"  --media-url URL        nginx's wa_media_fetch location    [WA_MEDIA_URL]\n"
"  --media-key KEY        its X-WA-Key, when wa_send_key is set there\n"
"                                                           [WA_MEDIA_KEY]\n"
"  --media-give-up-after SEC  a media not fetched by then is given up,\n"
"                         60-31536000 (2592000: 30 days)\n"
"                                                 [WA_MEDIA_GIVE_UP_AFTER]\n"
"  --media-timeout-ms MS  longest wait for nginx's answer, 1000-3600000\n"
"                         (300000)                   [WA_MEDIA_TIMEOUT_MS]\n"
"  --media-retry-ms MS    wait before the first retry of a failed fetch,\n"
"                         doubled each time up to an hour, 100-3600000\n"
"                         (5000)                       [WA_MEDIA_RETRY_MS]\n"
"  --backoff-max-ms MS    longest wait while the database is down\n"
"\n"
"dead-letters: the records PostgreSQL refused for good (wa_dead_letter)\n"
"  list                   those waiting (--all: the replayed ones too)\n"
"  show ID                one, with its fields and every reason\n"
"  replay ID... | --all   write them again through the ring's own ingest\n"
"                         functions, once the cause is fixed; a replayed\n"
"                         one is marked, one refused again keeps waiting\n"
"                         with its new reason (exit 1)\n"
"  --json                 list and show as JSON\n"
"\n"
"  -h, --help             this text\n");
}


int
wa_conf_parse(wa_conf_t *conf, int argc, char **argv)
{
    int              c, i, first, longindex;
    char             from[64];
    const char      *env;
    const wa_opt_t  *o;
    struct option    longopts[sizeof(wa_opts) / sizeof(wa_opts[0]) + 1];

    memset(conf, 0, sizeof(wa_conf_t));
    conf->batch_size = 1000;
    conf->batch_delay_ms = 20;
    conf->idle_ms = 2;
    conf->backoff_max_ms = 5000;
    conf->backfill_batch = 1000;
    conf->runs = 16;
    conf->media_give_up_sec = 2592000;
    conf->media_timeout_ms = 300000;
    conf->media_retry_ms = 5000;
    conf->census_ms = 5000;
    conf->pending_warn_s = 600;

    first = 1;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            wa_conf_usage(stdout);
            return -1;
        }
    }

    if (argc > 1 && argv[1][0] != '-') {
        for (i = 0; i < (int) (sizeof(wa_cmd_names) / sizeof(char *)); i++) {
            if (strcmp(argv[1], wa_cmd_names[i]) == 0) {
                conf->cmd = (wa_cmd_e) i;
                break;
            }
        }

        if (i == (int) (sizeof(wa_cmd_names) / sizeof(char *))) {
            fprintf(stderr, "wa-writer: unknown command \"%s\" "
                    "(run, migrate, status, backfill-leads, media, "
                    "dead-letters; see --help)\n",
                    argv[1]);
            return WA_EXIT_USAGE;
        }

        first = 2;
    }

    /* environment first: the command line overrides it */
    for (o = wa_opts; o->name; o++) {
        env = o->env ? getenv(o->env) : NULL;

        if (env == NULL || env[0] == '\0'
            || !(o->cmds & WA_C(conf->cmd)))
        {
            continue;
        }

        snprintf(from, sizeof(from), "environment variable %s", o->env);

        if (wa_conf_set(conf, o->opt, env, from) != 0) {
            return WA_EXIT_USAGE;
        }
    }

    /* each name once, or getopt takes its abbreviations for ambiguous */
    for (i = 0, o = wa_opts; o->name; o++) {
        if (o > wa_opts && strcmp(o->name, o[-1].name) == 0) {
            continue;
        }

        longopts[i].name = o->name;
        longopts[i].has_arg = (o->opt == WA_OPT_JSON || o->opt == WA_OPT_ALL)
                              ? no_argument : required_argument;
        longopts[i].flag = NULL;
        longopts[i].val = o->opt;
        i++;
    }

    memset(&longopts[i], 0, sizeof(struct option));

    optind = first;
    opterr = 0;

    while ((c = getopt_long(argc, argv, ":", longopts, &longindex)) != -1) {

        if (c == '?' || c == ':') {
            if (c == ':') {
                fprintf(stderr, "wa-writer: %s needs a value\n",
                        argv[optind - 1]);
            } else {
                fprintf(stderr, "wa-writer: unknown option \"%s\" "
                        "(see --help)\n", argv[optind - 1]);
            }

            return WA_EXIT_USAGE;
        }

        /* a name may mean a setting of each command: the command's */
        for (o = wa_opts; o->name; o++) {
            if (strcmp(o->name, longopts[longindex].name) == 0
                && (o->cmds & WA_C(conf->cmd)))
            {
                break;
            }
        }

        if (o->name == NULL) {
            fprintf(stderr, "wa-writer: --%s does not apply to \"%s\"\n",
                    longopts[longindex].name, wa_cmd_names[conf->cmd]);
            return WA_EXIT_USAGE;
        }

        snprintf(from, sizeof(from), "--%s", o->name);

        if (wa_conf_set(conf, o->opt, optarg, from) != 0) {
            return WA_EXIT_USAGE;
        }
    }

    if (conf->cmd == WA_CMD_DEAD_LETTERS) {
        /* getopt moved the operands to the end: ACTION [ID...] */
        conf->args = &argv[optind];
        conf->nargs = argc - optind;
        optind = argc;
    }

    if (optind < argc) {
        fprintf(stderr, "wa-writer: unexpected argument \"%s\" "
                "(see --help)\n", argv[optind]);
        return WA_EXIT_USAGE;
    }

    if ((conf->cmd == WA_CMD_RUN || conf->cmd == WA_CMD_STATUS)
        && conf->ring_path == NULL)
    {
        fprintf(stderr, "wa-writer: %s needs --ring PATH (or WA_RING)\n",
                wa_cmd_names[conf->cmd]);
        return WA_EXIT_USAGE;
    }

    if (conf->cmd == WA_CMD_MEDIA
        && (conf->media_dir == NULL || conf->media_url == NULL))
    {
        fprintf(stderr, "wa-writer: media needs --media-dir DIR and "
                "--media-url URL (or WA_MEDIA_DIR, WA_MEDIA_URL)\n");
        return WA_EXIT_USAGE;
    }

    return WA_EXIT_OK;
}


static int
wa_conf_set(wa_conf_t *conf, int opt, const char *value, const char *from)
{
    char  err[256];

    switch (opt) {

    case WA_OPT_RING:
        if (value[0] == '\0') {
            fprintf(stderr, "wa-writer: %s: empty path\n", from);
            return -1;
        }

        conf->ring_path = value;
        return 0;

    case WA_OPT_DB:
        if (wa_db_check_dsn(value, err, sizeof(err)) != 0) {
            fprintf(stderr, "wa-writer: %s: %s\n", from, err);
            return -1;
        }

        conf->dsn = value;
        return 0;

    case WA_OPT_BATCH_SIZE:
        return wa_conf_uint(value, from, 1, 100000, &conf->batch_size);

    case WA_OPT_BATCH_DELAY:
        return wa_conf_uint(value, from, 0, 60000, &conf->batch_delay_ms);

    case WA_OPT_IDLE:
        return wa_conf_uint(value, from, 1, 1000, &conf->idle_ms);

    case WA_OPT_BACKOFF_MAX:
        return wa_conf_uint(value, from, 100, 3600000, &conf->backoff_max_ms);

    case WA_OPT_RING_SIZE:
        return wa_conf_size(value, from, &conf->ring_size);

    case WA_OPT_BATCH:
        return wa_conf_uint(value, from, 1, 100000, &conf->backfill_batch);

    case WA_OPT_RUNS:
        return wa_conf_uint(value, from, 0, 100000, &conf->runs);

    case WA_OPT_CENSUS:
        return wa_conf_uint(value, from, 0, 3600000, &conf->census_ms);

    case WA_OPT_JSON:
        conf->json = 1;
        return 0;

    case WA_OPT_ALL:
        conf->all = 1;
        return 0;

    case WA_OPT_MEDIA_DIR:
    case WA_OPT_MEDIA_URL:
    case WA_OPT_MEDIA_KEY:
        if (value[0] == '\0') {
            fprintf(stderr, "wa-writer: %s: empty\n", from);
            return -1;
        }

        if (opt == WA_OPT_MEDIA_DIR) {
            conf->media_dir = value;
        } else if (opt == WA_OPT_MEDIA_URL) {
            conf->media_url = value;
        } else {
            conf->media_key = value;
        }

        return 0;

    case WA_OPT_MEDIA_GIVE_UP:
        return wa_conf_uint(value, from, 60, 31536000,
                            &conf->media_give_up_sec);

    case WA_OPT_MEDIA_TIMEOUT:
        return wa_conf_uint(value, from, 1000, 3600000,
                            &conf->media_timeout_ms);

    case WA_OPT_MEDIA_RETRY:
        return wa_conf_uint(value, from, 100, 3600000,
                            &conf->media_retry_ms);

    case WA_OPT_PENDING_WARN:
        return wa_conf_duration(value, from, &conf->pending_warn_s);

    case WA_OPT_HOLD_REPLICATED:
        if (strcmp(value, "on") == 0 || strcmp(value, "off") == 0) {
            conf->hold_replicated = value[1] == 'n';
            return 0;
        }

        fprintf(stderr, "wa-writer: %s: \"%s\" is not on or off\n", from,
                value);
        return -1;
    }

    return -1;
}


static int
wa_conf_uint(const char *value, const char *from, unsigned min, unsigned max,
    unsigned *out)
{
    char           *end;
    unsigned long   n;

    errno = 0;
    n = strtoul(value, &end, 10);

    if (value[0] < '0' || value[0] > '9' || *end != '\0' || errno != 0
        || n < min || n > max)
    {
        fprintf(stderr, "wa-writer: %s: \"%s\" is not a number from %u "
                "to %u\n", from, value, min, max);
        return -1;
    }

    *out = (unsigned) n;

    return 0;
}


static int
wa_conf_size(const char *value, const char *from, uint64_t *out)
{
    char                *end;
    unsigned             shift;
    unsigned long long   n;

    errno = 0;
    n = strtoull(value, &end, 10);

    if (value[0] < '0' || value[0] > '9' || errno != 0) {
        goto bad;
    }

    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: shift = 0;
    }

    if (*end != '\0' || n > (UINT64_C(1) << 40) >> shift) {
        goto bad;
    }

    n <<= shift;

    if (n < WA_RING_MIN_SIZE || (n & (n - 1)) != 0) {
        fprintf(stderr, "wa-writer: %s: %s is not a power of two of at "
                "least %u bytes (e.g. 64m)\n", from, value,
                (unsigned) WA_RING_MIN_SIZE);
        return -1;
    }

    *out = n;

    return 0;

bad:

    fprintf(stderr, "wa-writer: %s: \"%s\" is not a size (bytes, or with "
            "k, m, g)\n", from, value);
    return -1;
}


/* seconds, or a number with s, m, h or d; from 1s to 365d */
static int
wa_conf_duration(const char *value, const char *from, unsigned *out)
{
    char                *end;
    unsigned long long   n, unit;

    errno = 0;
    n = strtoull(value, &end, 10);

    switch (*end) {
    case 's': unit = 1; end++; break;
    case 'm': unit = 60; end++; break;
    case 'h': unit = 3600; end++; break;
    case 'd': unit = 86400; end++; break;
    default: unit = 1;
    }

    if (value[0] < '0' || value[0] > '9' || errno != 0 || *end != '\0'
        || n == 0 || n > 365ULL * 86400 / unit)
    {
        fprintf(stderr, "wa-writer: %s: \"%s\" is not a duration from 1s "
                "to 365d (seconds, or with s, m, h, d: 10m)\n", from, value);
        return -1;
    }

    *out = (unsigned) (n * unit);

    return 0;
}
