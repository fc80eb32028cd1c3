/*
 * Logging: one line per event on stderr,
 *
 *   2026-11-25T02:30:00.123Z wa-writer[PID] LEVEL message
 *
 * written with a single write(2) so lines from a dying process are never
 * interleaved. Messages are made printable here: PostgreSQL errors span
 * several lines and records may carry anything.
 */

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "wa_writer.h"


#define WA_LOG_LINE  4096


static const char  *wa_log_levels[] = {
    "INFO", "WARN", "ERROR", "CRITICAL"
};


void
wa_log(wa_log_level_e level, const char *fmt, ...)
{
    char             msg[WA_LOG_LINE], line[WA_LOG_LINE + 128];
    int              n;
    size_t           len;
    ssize_t          w;
    va_list          ap;
    struct tm        tm;
    struct timespec  ts;

    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    if (n < 0) {
        return;
    }

    len = (size_t) n < sizeof(msg) ? (size_t) n : sizeof(msg) - 1;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);

    n = snprintf(line, sizeof(line),
                 "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ wa-writer[%ld] %s ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, (long) getpid(),
                 wa_log_levels[level]);

    len = (size_t) n + wa_sanitize(line + n, sizeof(line) - n - 1, msg, len);
    line[len++] = '\n';

    /* stderr may be a pipe to a slow reader: retry short writes only */
    for (const char *p = line; len > 0; p += w, len -= (size_t) w) {
        w = write(STDERR_FILENO, p, len);
        if (w <= 0) {
            return;
        }
    }
}
