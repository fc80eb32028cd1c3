/*
 * tap.h: the few Test Anything Protocol helpers the C unit tests need.
 * Header-only; each test program includes it once.
 */

#ifndef WA_TAP_H
#define WA_TAP_H

#include <stdarg.h>
#include <stdio.h>

static int  tap_planned;
static int  tap_run;
static int  tap_failed;


static void
plan(int n)
{
    tap_planned = n;
    printf("1..%d\n", n);
    fflush(stdout);
}


/* ok(cond, "description %d", ...): one test line */
__attribute__((format(printf, 2, 3)))
static int
ok(int cond, const char *fmt, ...)
{
    va_list  ap;

    tap_run++;

    if (!cond) {
        tap_failed++;
    }

    printf("%sok %d - ", cond ? "" : "not ", tap_run);

    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);

    printf("\n");
    fflush(stdout);

    return cond;
}


/* a comment line, shown by prove -v */
__attribute__((format(printf, 1, 2)))
static void
diag(const char *fmt, ...)
{
    va_list  ap;

    printf("# ");

    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);

    printf("\n");
    fflush(stdout);
}


/* the exit code: non-zero on any failure or a wrong count */
static int
done(void)
{
    if (tap_run != tap_planned) {
        diag("planned %d tests, ran %d", tap_planned, tap_run);
        return 255;
    }

    return tap_failed ? 1 : 0;
}

#endif /* WA_TAP_H */
