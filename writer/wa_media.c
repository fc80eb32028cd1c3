/*
 * wa-writer media: the fetcher of inbound media (schema 019).
 *
 * One process, one database connection, one fetch at a time. It claims
 * the next media due (wa_media_claim: a lease, SKIP LOCKED, so fetchers on
 * several hosts share the queue), asks nginx's wa_media_fetch location to
 * download it (nginx holds the channel's token; the file lands in
 * <media-dir>/tmp), then makes the file durable: fsync, rename to
 * <sha[0:2]>/<sha256>.<ext> (identical files are one file), fsync of the
 * directory, and only then the row says fetched. Blocking calls are this
 * process's business, never nginx's.
 *
 * A failure is retried with capped, jittered backoff until the media is
 * older than --media-give-up-after; a media id the provider does not know,
 * a file over nginx's wa_media_max_size, or a file that keeps arriving
 * with the wrong sha256, is given up at once or after a few tries: a
 * CRITICAL line, the row failed with its reason, counted.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include <curl/curl.h>
#include <cjson/cJSON.h>

#include "wa_writer.h"
#include "wa_media_types.h"


/* a mismatching file is fetched again this many times, then given up */
#define WA_MEDIA_MISMATCH_TRIES   3
/* ms between looks at an empty queue without a notification */
#define WA_MEDIA_POLL_MS          1000
/* the counts nginx shows are refreshed at most this often */
#define WA_MEDIA_REPORT_MS        5000
/* a temporary file this old belongs to no fetch in flight */
#define WA_MEDIA_TMP_STALE_SEC    3600


typedef struct {
    wa_conf_t    *conf;
    wa_db_t       db;
    CURL         *curl;
    wa_buf_t      answer;
    uint64_t      counted_ms;
    uint64_t      swept_ms;
    long long     waiting;
    long long     failed;
    char          url[4096];
} wa_fetcher_t;

typedef struct {
    const char   *id;
    const char   *media_id;
    const char   *phone_number_id;
    const char   *kind;
    int           attempts;
    double        age_sec;
} wa_media_job_t;


static int wa_media_connect(wa_fetcher_t *f);
static int wa_media_one(wa_fetcher_t *f);
static void wa_media_fetch(wa_fetcher_t *f, wa_media_job_t *job);
static int wa_media_store(wa_fetcher_t *f, wa_media_job_t *job,
    const char *tmp, const char *sha, const char *mime, char *path,
    size_t size);
static void wa_media_retry(wa_fetcher_t *f, wa_media_job_t *job,
    const char *why);
static void wa_media_give_up(wa_fetcher_t *f, wa_media_job_t *job,
    const char *why);
static int wa_media_exec(wa_fetcher_t *f, const char *sql, int n,
    const char **params);
static long wa_media_call(wa_fetcher_t *f, const char *query);
static void wa_media_count(wa_fetcher_t *f, int force);
static void wa_media_wait(wa_fetcher_t *f, unsigned ms);
static void wa_media_sweep_tmp(const char *dir);
static int wa_media_fsync_dir(const char *dir);
static size_t wa_media_write(char *ptr, size_t size, size_t n, void *data);
static void wa_media_on_signal(int signo);


int
wa_media(wa_conf_t *conf)
{
    char              tmp[4096];
    wa_fetcher_t      f;
    struct sigaction  sa;

    memset(&f, 0, sizeof(wa_fetcher_t));
    f.conf = conf;
    f.db.dsn = conf->dsn;

    memset(&sa, 0, sizeof(struct sigaction));
    sa.sa_handler = wa_media_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    snprintf(tmp, sizeof(tmp), "%s/tmp", conf->media_dir);

    if (mkdir(tmp, 0770) != 0 && errno != EEXIST) {
        wa_log(WA_LOG_ERROR, "media: cannot create %s: %s", tmp,
               strerror(errno));
        return WA_EXIT_FAIL;
    }

    wa_media_sweep_tmp(tmp);
    f.swept_ms = wa_now_ms();

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK
        || (f.curl = curl_easy_init()) == NULL)
    {
        wa_log(WA_LOG_ERROR, "media: libcurl init failed");
        return WA_EXIT_FAIL;
    }

    wa_log(WA_LOG_INFO, "media: starting: nginx %s, files in %s, give up "
           "after %u s", conf->media_url, conf->media_dir,
           conf->media_give_up_sec);

    while (!wa_stop) {

        if (f.db.conn == NULL || PQstatus(f.db.conn) != CONNECTION_OK) {
            if (wa_media_connect(&f) != 0) {
                wa_media_wait(&f, conf->backoff_max_ms);
                continue;
            }
        }

        if (wa_media_one(&f) == 0) {
            wa_media_count(&f, 0);
            wa_media_wait(&f, WA_MEDIA_POLL_MS);
        }

        /* an answer this fetcher stopped waiting for still leaves a file */
        if (wa_now_ms() - f.swept_ms > WA_MEDIA_TMP_STALE_SEC * 1000 / 6) {
            wa_media_sweep_tmp(tmp);
            f.swept_ms = wa_now_ms();
        }
    }

    wa_log(WA_LOG_INFO, "media: stopped by signal %d", (int) wa_stop);

    curl_easy_cleanup(f.curl);
    free(f.answer.data);
    wa_db_close(&f.db);

    return WA_EXIT_OK;
}


static int
wa_media_connect(wa_fetcher_t *f)
{
    PGresult  *res;

    if (wa_db_connect(&f->db) != 0) {
        if (!f->db.logged_down) {
            wa_log(WA_LOG_ERROR, "media: cannot connect to %s: %s",
                   f->db.where, f->db.error);
            f->db.logged_down = 1;
        }

        return -1;
    }

    res = PQexec(f->db.conn, "LISTEN wa_media");

    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        wa_db_set_error(&f->db, res, "LISTEN");
        wa_log(WA_LOG_ERROR, "media: %s", f->db.error);
        PQclear(res);
        wa_db_close(&f->db);
        return -1;
    }

    PQclear(res);

    wa_log(WA_LOG_INFO, "media: connected to %s", f->db.where);
    f->db.logged_down = 0;
    f->counted_ms = 0;

    return 0;
}


/* claim and fetch one media: 1, or 0 when none is due (or on an error,
 * logged: the caller waits) */

static int
wa_media_one(wa_fetcher_t *f)
{
    int              found;
    char             lease[32];
    PGresult        *res;
    const char      *params[1];
    wa_media_job_t   job;

    /* the lease outlasts the longest wait for nginx (--media-timeout-ms,
     * after which this fetcher stops waiting): a fetcher that died is
     * replaced soon, a live one never loses its media to another */
    snprintf(lease, sizeof(lease), "%u",
             (f->conf->media_timeout_ms + 999) / 1000 + 10);
    params[0] = lease;

    res = PQexecParams(f->db.conn,
                       "SELECT id, media_id, phone_number_id, kind, "
                       "attempts, age_sec FROM wa_media_claim($1::int)",
                       1, NULL, params, NULL, NULL, 0);

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        wa_db_set_error(&f->db, res, "claim");
        wa_log(WA_LOG_ERROR, "media: cannot claim the next media: %s",
               f->db.error);
        PQclear(res);

        if (PQstatus(f->db.conn) != CONNECTION_OK) {
            wa_db_close(&f->db);
        }

        return 0;
    }

    found = PQntuples(res) == 1;

    if (found) {
        job.id = PQgetvalue(res, 0, 0);
        job.media_id = PQgetvalue(res, 0, 1);
        job.phone_number_id = PQgetvalue(res, 0, 2);
        job.kind = PQgetvalue(res, 0, 3);
        job.attempts = atoi(PQgetvalue(res, 0, 4));
        job.age_sec = strtod(PQgetvalue(res, 0, 5), NULL);

        if (job.age_sec > (double) f->conf->media_give_up_sec) {
            wa_media_give_up(f, &job, "expired: not fetched within "
                             "--media-give-up-after");
        } else {
            wa_media_fetch(f, &job);
        }
    }

    PQclear(res);

    return found;
}


static void
wa_media_fetch(wa_fetcher_t *f, wa_media_job_t *job)
{
    long         status;
    char         query[512], why[512], path[1024];
    char        *mid, *pnid;
    cJSON       *root, *file, *sha, *mime, *reason, *err;
    const char  *r;

    wa_media_count(f, 0);

    mid = curl_easy_escape(f->curl, job->media_id, 0);
    pnid = curl_easy_escape(f->curl, job->phone_number_id, 0);

    snprintf(query, sizeof(query), "media_id=%s&phone_number_id=%s",
             mid ? mid : "", pnid ? pnid : "");

    curl_free(mid);
    curl_free(pnid);

    status = wa_media_call(f, query);

    if (status == 0) {
        /* nginx did not answer: the reason is in why via the answer buf */
        snprintf(why, sizeof(why), "nginx did not answer: %s",
                 f->answer.len ? f->answer.data : "?");
        wa_media_retry(f, job, why);
        return;
    }

    root = cJSON_ParseWithLength(f->answer.data ? f->answer.data : "",
                                 f->answer.len);

    if (status == 200) {
        file = cJSON_GetObjectItemCaseSensitive(root, "file");
        sha = cJSON_GetObjectItemCaseSensitive(root, "sha256");
        mime = cJSON_GetObjectItemCaseSensitive(root, "mime_type");

        if (!cJSON_IsString(file) || !cJSON_IsString(sha)
            || strlen(sha->valuestring) != 64
            || strncmp(file->valuestring, "tmp/", 4) != 0
            || strchr(file->valuestring + 4, '/') != NULL)
        {
            wa_media_retry(f, job, "nginx's answer is not a stored file");

        } else if (wa_media_store(f, job, file->valuestring,
                                  sha->valuestring,
                                  cJSON_IsString(mime) ? mime->valuestring
                                                       : "",
                                  path, sizeof(path))
                   == 0)
        {
            wa_log(WA_LOG_INFO, "media: media %s of message row %s stored "
                   "as %s", job->media_id, job->id, path);
        }

        cJSON_Delete(root);
        return;
    }

    reason = cJSON_GetObjectItemCaseSensitive(root, "reason");
    err = cJSON_GetObjectItemCaseSensitive(root, "error");
    r = cJSON_IsString(reason) ? reason->valuestring : "http";

    snprintf(why, sizeof(why), "%s: HTTP %ld from nginx: %s", r, status,
             cJSON_IsString(err) ? err->valuestring : "no reason given");

    if (strcmp(r, "not_found") == 0 || strcmp(r, "too_big") == 0
        || (strcmp(r, "sha256_mismatch") == 0
            && job->attempts >= WA_MEDIA_MISMATCH_TRIES))
    {
        wa_media_give_up(f, job, why);

    } else {
        /* no_space among them: loud, and nothing partial was kept */
        wa_media_retry(f, job, why);
    }

    cJSON_Delete(root);
}


/*
 * The file nginx wrote is made durable under its content's name. The
 * name is taken from the sha256 nginx computed while writing; the rename
 * is atomic, so a reader never sees half a file, and a second message
 * with the same bytes finds the file there and reuses it.
 */

static int
wa_media_store(wa_fetcher_t *f, wa_media_job_t *job, const char *tmp,
    const char *sha, const char *mime, char *path, size_t size)
{
    int          fd;
    char         src[4096], dir[4096], dst[4096], why[512], szbuf[32];
    const char  *params[5];
    struct stat  st;

    snprintf(src, sizeof(src), "%s/%s", f->conf->media_dir, tmp);
    snprintf(path, size, "%.2s/%s.%s", sha, sha,
             wa_media_ext(mime, strlen(mime)));
    snprintf(dir, sizeof(dir), "%s/%.2s", f->conf->media_dir, sha);
    snprintf(dst, sizeof(dst), "%s/%s", f->conf->media_dir, path);

    fd = open(src, O_RDONLY);

    if (fd == -1 || fsync(fd) != 0 || fstat(fd, &st) != 0) {
        snprintf(why, sizeof(why), "cannot sync %.400s: %s", src,
                 strerror(errno));
        if (fd != -1) {
            close(fd);
        }
        unlink(src);
        wa_media_retry(f, job, why);
        return -1;
    }

    close(fd);

    if (mkdir(dir, 0770) != 0 && errno != EEXIST) {
        snprintf(why, sizeof(why), "cannot create %.400s: %s", dir,
                 strerror(errno));
        unlink(src);
        wa_media_retry(f, job, why);
        return -1;
    }

    if (access(dst, F_OK) == 0) {
        /* stored already, by an earlier message with the same bytes */
        unlink(src);

    } else if (rename(src, dst) != 0 || wa_media_fsync_dir(dir) != 0) {
        snprintf(why, sizeof(why), "cannot store %.400s: %s", dst,
                 strerror(errno));
        unlink(src);
        wa_media_retry(f, job, why);
        return -1;
    }

    snprintf(szbuf, sizeof(szbuf), "%lld", (long long) st.st_size);

    params[0] = job->id;
    params[1] = path;
    params[2] = szbuf;
    params[3] = mime[0] ? mime : NULL;
    params[4] = sha;

    if (wa_media_exec(f, "SELECT wa_media_fetched($1::bigint, $2, "
                      "$3::bigint, $4, $5)", 5, params) != 0)
    {
        /* the file is stored; the row is claimed: the next try after the
         * lease finds the file and records it */
        wa_log(WA_LOG_ERROR, "media: media %s stored as %s but not "
               "recorded: %s", job->media_id, path, f->db.error);
        return -1;
    }

    return 0;
}


static void
wa_media_retry(wa_fetcher_t *f, wa_media_job_t *job, const char *why)
{
    char          delay[32];
    unsigned      sec;
    uint64_t      ms;
    const char   *params[3];

    /* the base (5 s), doubled each attempt, an hour at most, each plus up
     * to a quarter */
    ms = (uint64_t) f->conf->media_retry_ms
         << (job->attempts > 20 ? 20 : job->attempts - 1);
    ms = ms > 3600000 ? 3600000 : ms;
    ms += (uint64_t) rand() % (ms / 4 + 1);
    sec = (unsigned) ((ms + 999) / 1000);

    if (job->age_sec + sec > (double) f->conf->media_give_up_sec) {
        char  last[600];

        snprintf(last, sizeof(last), "expired while failing: %s", why);
        wa_media_give_up(f, job, last);
        return;
    }

    wa_log(WA_LOG_ERROR, "media: media %s (message row %s, attempt %d) "
           "failed, retried in %u s: %s", job->media_id, job->id,
           job->attempts, sec, why);

    snprintf(delay, sizeof(delay), "%.3f", (double) ms / 1000);
    params[0] = job->id;
    params[1] = why;
    params[2] = delay;

    if (wa_media_exec(f, "SELECT wa_media_failed($1::bigint, $2, "
                      "$3::float8)", 3, params) != 0)
    {
        wa_log(WA_LOG_ERROR, "media: media %s: cannot record the failure "
               "(retried after its lease): %s", job->media_id, f->db.error);
    }
}


static void
wa_media_give_up(wa_fetcher_t *f, wa_media_job_t *job, const char *why)
{
    const char  *params[3];

    wa_log(WA_LOG_CRITICAL, "media: media %s of message row %s (%s) given "
           "up after %d attempt(s): %s", job->media_id, job->id, job->kind,
           job->attempts, why);

    params[0] = job->id;
    params[1] = why;
    params[2] = NULL;

    if (wa_media_exec(f, "SELECT wa_media_failed($1::bigint, $2, "
                      "$3::float8)", 3, params) != 0)
    {
        wa_log(WA_LOG_ERROR, "media: media %s: cannot record the give-up "
               "(tried again after its lease): %s", job->media_id,
               f->db.error);
    }

    f->counted_ms = 0;
}


static int
wa_media_exec(wa_fetcher_t *f, const char *sql, int n, const char **params)
{
    int        rc;
    PGresult  *res;

    res = PQexecParams(f->db.conn, sql, n, NULL, params, NULL, NULL, 0);
    rc = PQresultStatus(res) == PGRES_TUPLES_OK
         || PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : -1;

    if (rc != 0) {
        wa_db_set_error(&f->db, res, "media");
    }

    PQclear(res);

    return rc;
}


/* GET the fetch location; the HTTP status, or 0 when nginx did not answer
 * (the answer buffer then holds libcurl's reason) */

static long
wa_media_call(wa_fetcher_t *f, const char *query)
{
    long                status;
    char                key[512], waiting[64], failed[64];
    CURLcode            rc;
    struct curl_slist  *h;

    snprintf(f->url, sizeof(f->url), "%s%s%s", f->conf->media_url,
             strchr(f->conf->media_url, '?') ? "&" : "?", query);

    snprintf(waiting, sizeof(waiting), "X-WA-Media-Waiting: %lld",
             f->waiting);
    snprintf(failed, sizeof(failed), "X-WA-Media-Failed: %lld", f->failed);

    h = curl_slist_append(NULL, waiting);
    h = curl_slist_append(h, failed);

    if (f->conf->media_key) {
        snprintf(key, sizeof(key), "X-WA-Key: %s", f->conf->media_key);
        h = curl_slist_append(h, key);
    }

    f->answer.len = 0;

    curl_easy_reset(f->curl);
    curl_easy_setopt(f->curl, CURLOPT_URL, f->url);
    curl_easy_setopt(f->curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(f->curl, CURLOPT_WRITEFUNCTION, wa_media_write);
    curl_easy_setopt(f->curl, CURLOPT_WRITEDATA, &f->answer);
    curl_easy_setopt(f->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(f->curl, CURLOPT_TIMEOUT_MS,
                     (long) f->conf->media_timeout_ms);
    curl_easy_setopt(f->curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);

    rc = curl_easy_perform(f->curl);
    curl_slist_free_all(h);

    if (rc != CURLE_OK) {
        f->answer.len = 0;
        wa_buf_add(&f->answer, curl_easy_strerror(rc),
                   strlen(curl_easy_strerror(rc)));
        return 0;
    }

    status = 0;
    curl_easy_getinfo(f->curl, CURLINFO_RESPONSE_CODE, &status);

    return status;
}


/* what is waiting and what was given up: nginx shows the latest count it
 * was told, with its age */

static void
wa_media_count(wa_fetcher_t *f, int force)
{
    uint64_t   now;
    PGresult  *res;

    now = wa_now_ms();

    if (!force && f->counted_ms && now - f->counted_ms < WA_MEDIA_REPORT_MS) {
        return;
    }

    /* each count reads a partial index, not the table */
    res = PQexec(f->db.conn,
                 "SELECT (SELECT count(*) FROM wa_media "
                 "WHERE state = 'waiting'), (SELECT count(*) FROM wa_media "
                 "WHERE state = 'failed')");

    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        f->waiting = atoll(PQgetvalue(res, 0, 0));
        f->failed = atoll(PQgetvalue(res, 0, 1));
        f->counted_ms = now;
    }

    PQclear(res);

    /* an idle fetcher still reports, so its absence shows */
    if (wa_media_call(f, "report=1") == 0) {
        wa_log(WA_LOG_WARN, "media: nginx at %s does not answer: %s",
               f->conf->media_url, f->answer.len ? f->answer.data : "?");
    }
}


/* wait for a notification of new media, ms at most */

static void
wa_media_wait(wa_fetcher_t *f, unsigned ms)
{
    int              fd;
    fd_set           rfds;
    PGnotify        *n;
    struct timeval   tv;

    if (f->db.conn == NULL || (fd = PQsocket(f->db.conn)) < 0) {
        wa_sleep_ms(ms);
        return;
    }

    FD_ZERO(&rfds);
    FD_SET(fd, &rfds);
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;

    if (select(fd + 1, &rfds, NULL, NULL, &tv) > 0) {
        PQconsumeInput(f->db.conn);

        while ((n = PQnotifies(f->db.conn)) != NULL) {
            PQfreemem(n);
        }
    }
}


/* files a fetcher that died left behind */

static void
wa_media_sweep_tmp(const char *dir)
{
    DIR            *d;
    char            path[4096];
    time_t          now;
    struct stat     st;
    struct dirent  *e;

    d = opendir(dir);
    if (d == NULL) {
        return;
    }

    now = time(NULL);

    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }

        snprintf(path, sizeof(path), "%.3800s/%.255s", dir, e->d_name);

        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)
            && now - st.st_mtime > WA_MEDIA_TMP_STALE_SEC)
        {
            wa_log(WA_LOG_INFO, "media: removing the stale temporary file "
                   "%s", path);
            unlink(path);
        }
    }

    closedir(d);
}


static int
wa_media_fsync_dir(const char *dir)
{
    int  fd, rc;

    fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd == -1) {
        return -1;
    }

    rc = fsync(fd);
    close(fd);

    return rc;
}


static size_t
wa_media_write(char *ptr, size_t size, size_t n, void *data)
{
    wa_buf_t *b = data;

    /* an answer of nginx's is small JSON: more is not ours */
    if (b->len + size * n > 64 * 1024
        || wa_buf_add(b, ptr, size * n) != 0)
    {
        return 0;
    }

    return size * n;
}


static void
wa_media_on_signal(int signo)
{
    wa_stop = signo;
}
