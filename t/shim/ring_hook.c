/*
 * A test shim preloaded into nginx (LD_PRELOAD): it defines the weak
 * wa_ring_test_hook() that wa_ring.c calls between a claim and its commit,
 * so a test can stop or kill a worker exactly there. Production builds
 * have no definition and never call it.
 *
 * Driven by the environment, read once per process (nginx clears the
 * workers' environment: the test's config passes them with "env"):
 *
 *   WA_HOOK_POINT   claimed (tail claimed, no header yet) or written
 *                   (payload written, not committed); unset: do nothing
 *   WA_HOOK_ACTION  kill (SIGKILL) or stop (SIGSTOP); default kill
 *   WA_HOOK_AFTER   let N records reach the point first; default 0
 *   WA_HOOK_TYPE    only records of this type (wa_record.h); default any
 *   WA_HOOK_ONCE    a file created (O_EXCL) by the one process that fires,
 *                   holding its pid: once for all workers, respawned ones
 *                   included
 */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wa_ring.h"


void wa_ring_test_hook(int point, unsigned type);


static int            hook_ready;
static int            hook_point;
static int            hook_signal;
static long           hook_type = -1;
static unsigned long  hook_after;
static const char    *hook_once;


static void
hook_init(void)
{
    const char  *v;

    hook_ready = 1;

    v = getenv("WA_HOOK_POINT");

    if (v == NULL) {
        return;
    }

    if (strcmp(v, "claimed") == 0) {
        hook_point = WA_RING_HOOK_CLAIMED;

    } else if (strcmp(v, "written") == 0) {
        hook_point = WA_RING_HOOK_WRITTEN;

    } else {
        fprintf(stderr, "ring_hook: WA_HOOK_POINT=%s: claimed or written\n",
                v);
        return;
    }

    v = getenv("WA_HOOK_ACTION");
    hook_signal = (v != NULL && strcmp(v, "stop") == 0) ? SIGSTOP : SIGKILL;

    v = getenv("WA_HOOK_AFTER");
    hook_after = (v != NULL) ? strtoul(v, NULL, 10) : 0;

    v = getenv("WA_HOOK_TYPE");
    hook_type = (v != NULL) ? strtol(v, NULL, 10) : -1;

    hook_once = getenv("WA_HOOK_ONCE");
}


void
wa_ring_test_hook(int point, unsigned type)
{
    int   fd;
    char  pid[32];

    if (!hook_ready) {
        hook_init();
    }

    if (point != hook_point
        || (hook_type != -1 && (long) type != hook_type))
    {
        return;
    }

    if (hook_after > 0) {
        hook_after--;
        return;
    }

    hook_point = 0;             /* this process fires once */

    if (hook_once != NULL) {
        fd = open(hook_once, O_WRONLY | O_CREAT | O_EXCL, 0644);

        if (fd == -1) {
            return;             /* another worker fired already */
        }

        snprintf(pid, sizeof(pid), "%d\n", (int) getpid());

        if (write(fd, pid, strlen(pid)) == -1) {
            /* the test then cannot find us; it says so */
        }

        close(fd);
    }

    raise(hook_signal);
}
