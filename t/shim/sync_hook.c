/*
 * A test shim preloaded into nginx (LD_PRELOAD): it wraps fdatasync(),
 * fsync() and msync() of the ring file, so a test can make the disk slow
 * or failing, and see every sync the module asks for.
 *
 * Driven by files in the directory named by WA_SYNC_HOOK_DIR (nginx clears
 * the workers' environment: the test's config passes it with "env"),
 * read at every sync, so a test changes the disk's behaviour mid-run:
 *
 *   delay_ms   N: each sync sleeps N ms first (in the calling thread)
 *   fail       EIO or ENOSPC: each sync fails with it, the real call is
 *              not made
 *   syncs      appended, one line per sync of the ring:
 *              "<pid> <tid> <start_us> <end_us> <0 or errno>"
 *              (CLOCK_REALTIME, microseconds)
 *
 * Only the file whose name ends in WA_SYNC_HOOK_NAME (default "/ring") is
 * touched; other syncs pass through unseen.
 */

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>


typedef int (*sync_fn_t)(int fd);
typedef int (*msync_fn_t)(void *addr, size_t len, int flags);


static long long
now_us(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);

    return (long long) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


/* the contents of dir/name, or "" */
static void
hook_read(const char *dir, const char *name, char *buf, size_t size)
{
    int      fd;
    char     path[4096];
    ssize_t  n;

    buf[0] = '\0';
    snprintf(path, sizeof(path), "%s/%s", dir, name);

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        return;
    }

    n = read(fd, buf, size - 1);
    close(fd);

    buf[n > 0 ? n : 0] = '\0';
}


static int
is_ring(int fd)
{
    char         link[64], path[4096];
    size_t       nlen, plen;
    ssize_t      n;
    const char  *name;

    name = getenv("WA_SYNC_HOOK_NAME");
    if (name == NULL) {
        name = "/ring";
    }

    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);

    n = readlink(link, path, sizeof(path) - 1);
    if (n <= 0) {
        return 0;
    }

    path[n] = '\0';
    plen = (size_t) n;
    nlen = strlen(name);

    return plen >= nlen && strcmp(path + plen - nlen, name) == 0;
}


/* before the real call: delay, then the failure to fake (0: none) */
static int
hook_before(const char *dir)
{
    long  ms;
    char  buf[64];

    hook_read(dir, "delay_ms", buf, sizeof(buf));
    ms = strtol(buf, NULL, 10);

    if (ms > 0) {
        struct timespec  ts = { ms / 1000, (ms % 1000) * 1000000L };

        while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
            /* the rest of it */
        }
    }

    hook_read(dir, "fail", buf, sizeof(buf));

    if (strncmp(buf, "EIO", 3) == 0) {
        return EIO;
    }

    if (strncmp(buf, "ENOSPC", 6) == 0) {
        return ENOSPC;
    }

    return 0;
}


static void
hook_after(const char *dir, long long start, int err)
{
    int   fd;
    char  path[4096], line[128];
    int   len;

    snprintf(path, sizeof(path), "%s/syncs", dir);

    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
    if (fd == -1) {
        return;
    }

    /* one write() of one line: appends do not interleave */
    len = snprintf(line, sizeof(line), "%d %ld %lld %lld %d\n", (int) getpid(),
                   (long) syscall(SYS_gettid), start, now_us(), err);
    if (write(fd, line, (size_t) len) != len) {
        /* nothing to do about it in a shim */
    }

    close(fd);
}


static int
hook_sync(int fd, const char *fn_name)
{
    int          err, rc;
    long long    start;
    sync_fn_t    real;
    const char  *dir;

    real = (sync_fn_t) dlsym(RTLD_NEXT, fn_name);
    dir = getenv("WA_SYNC_HOOK_DIR");

    if (dir == NULL || !is_ring(fd)) {
        return real(fd);
    }

    start = now_us();
    err = hook_before(dir);

    if (err) {
        rc = -1;

    } else {
        rc = real(fd);
        err = (rc == -1) ? errno : 0;
    }

    hook_after(dir, start, err);

    errno = err;
    return rc;
}


int
fdatasync(int fd)
{
    return hook_sync(fd, "fdatasync");
}


int
fsync(int fd)
{
    return hook_sync(fd, "fsync");
}


/* the module does not msync; one that did would show here, unfiltered */
int
msync(void *addr, size_t len, int flags)
{
    int          err, rc;
    long long    start;
    msync_fn_t   real;
    const char  *dir;

    real = (msync_fn_t) dlsym(RTLD_NEXT, "msync");
    dir = getenv("WA_SYNC_HOOK_DIR");

    if (dir == NULL || !(flags & MS_SYNC)) {
        return real(addr, len, flags);
    }

    start = now_us();
    err = hook_before(dir);

    if (err) {
        rc = -1;

    } else {
        rc = real(addr, len, flags);
        err = (rc == -1) ? errno : 0;
    }

    hook_after(dir, start, err);

    errno = err;
    return rc;
}
