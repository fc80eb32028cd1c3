/*
 * libFuzzer target: the ring reader over arbitrary file contents. The
 * input is the data area plus head/tail positions (a corrupt file can hold
 * anything); the reader must skip or wait, never read outside the mapping
 * or loop forever. A second pass opens the raw bytes as a ring file.
 */

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wa_ring.h"

#define FUZZ_CAP  WA_RING_MIN_SIZE


static char  path[64];


static int
fuzz_write(const void *buf, size_t len)
{
    int      fd;
    ssize_t  n;

    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd == -1) {
        return -1;
    }

    n = write(fd, buf, len);
    close(fd);

    return n == (ssize_t) len ? 0 : -1;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int             rc, i;
    char            err[WA_RING_ERR_LEN];
    uint64_t        cursor, head, tail, now;
    wa_ring_t       ring;
    wa_ring_rec_t   rec;
    unsigned char  *file;
    wa_ring_hdr_t  *hdr;

    if (path[0] == '\0') {
        snprintf(path, sizeof(path), "/tmp/wa_fuzz_ring.%d", (int) getpid());
    }

    if (size < 16) {
        return 0;
    }

    memcpy(&head, data, 8);
    memcpy(&tail, data + 8, 8);
    data += 16;
    size -= 16;

    /* a valid header over fuzzed data and positions */
    file = calloc(1, WA_RING_HDR_SIZE + FUZZ_CAP);
    if (file == NULL) {
        return 0;
    }

    hdr = (wa_ring_hdr_t *) file;
    hdr->magic = WA_RING_MAGIC;
    hdr->version = WA_RING_VERSION;
    hdr->hdr_size = WA_RING_HDR_SIZE;
    hdr->capacity = FUZZ_CAP;
    /* positions are aligned in any file open accepts: keep them so, and
     * let the fuzzer corrupt what the reader walks over */
    head = (head % (4 * FUZZ_CAP)) & ~(uint64_t) (WA_RING_ALIGN - 1);
    hdr->head = head;
    hdr->tail = head + ((tail % (FUZZ_CAP + 1))
                        & ~(uint64_t) (WA_RING_ALIGN - 1));

    memcpy(file + WA_RING_HDR_SIZE, data, size < FUZZ_CAP ? size : FUZZ_CAP);

    if (fuzz_write(file, WA_RING_HDR_SIZE + FUZZ_CAP) == 0
        && wa_ring_open(&ring, path, 0, 0, 0600, err, sizeof(err))
           == WA_RING_OK)
    {
        cursor = wa_ring_head(&ring);
        now = 1;

        /* every read makes progress or waits; bounded either way */
        for (i = 0; i < 10000; i++) {
            rc = wa_ring_read(&ring, &cursor, &rec, now);

            if (rc == WA_RING_EMPTY) {
                break;
            }

            if (rc == WA_RING_OK && rec.payload_len
                && rec.payload[rec.payload_len - 1] == 0xff)
            {
                now++;   /* touch the last payload byte */
            }

            if (rc == WA_RING_WAIT) {
                now += (WA_RING_STUCK_SEC + 1) * 1000;
            }

            if (cursor > wa_ring_tail(&ring)) {
                abort();
            }
        }

        wa_ring_close(&ring);
    }

    /* the raw input as a whole file: validation must refuse or accept it
     * without touching bytes past its end */
    if (fuzz_write(data, size) == 0
        && wa_ring_open(&ring, path, 0, 0, 0600, err, sizeof(err))
           == WA_RING_OK)
    {
        wa_ring_close(&ring);
    }

    free(file);
    unlink(path);

    return 0;
}
