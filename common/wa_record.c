/*
 * wa_record: encode and decode the TLV payload of a ring record.
 */

#include <string.h>

#include "wa_record.h"


size_t
wa_record_size(const wa_record_t *rec)
{
    int     i;
    size_t  n;

    n = 0;

    for (i = 1; i < WA_F__MAX; i++) {
        if (rec->f[i].data != NULL) {
            n += WA_FIELD_HDR + rec->f[i].len;
        }
    }

    return n;
}


void
wa_record_encode(const wa_record_t *rec, unsigned char *dst)
{
    int       i;
    uint32_t  len;

    for (i = 1; i < WA_F__MAX; i++) {
        if (rec->f[i].data == NULL) {
            continue;
        }

        len = rec->f[i].len;

        *dst++ = (unsigned char) i;
        *dst++ = (unsigned char) (len & 0xff);
        *dst++ = (unsigned char) ((len >> 8) & 0xff);
        *dst++ = (unsigned char) ((len >> 16) & 0xff);
        *dst++ = (unsigned char) ((len >> 24) & 0xff);

        if (len) {
            memcpy(dst, rec->f[i].data, len);
            dst += len;
        }
    }
}


int
wa_record_decode(wa_record_t *rec, uint16_t type, const unsigned char *src,
    size_t len)
{
    unsigned int          tag;
    uint32_t              flen;
    const unsigned char  *p, *end;

    memset(rec, 0, sizeof(wa_record_t));

    if (type == 0 || type > WA_REC_TYPE_MAX) {
        return -1;
    }

    rec->type = type;

    p = src;
    end = src + len;

    while (p < end) {
        if ((size_t) (end - p) < WA_FIELD_HDR) {
            return -1;
        }

        tag = p[0];
        flen = (uint32_t) p[1] | (uint32_t) p[2] << 8
               | (uint32_t) p[3] << 16 | (uint32_t) p[4] << 24;
        p += WA_FIELD_HDR;

        if (tag == 0 || tag >= WA_F__MAX || rec->f[tag].data != NULL) {
            return -1;
        }

        if (flen > (size_t) (end - p)) {
            return -1;
        }

        rec->f[tag].data = (const char *) p;
        rec->f[tag].len = flen;
        p += flen;
    }

    return 0;
}


void
wa_record_set(wa_record_t *rec, int tag, const char *s)
{
    if (s == NULL) {
        rec->f[tag].data = NULL;
        rec->f[tag].len = 0;
        return;
    }

    rec->f[tag].data = s;
    rec->f[tag].len = (uint32_t) strlen(s);
}


const char *
wa_record_type_name(uint16_t type)
{
    static const char  *names[] = {
        "unknown", "in_message", "status", "out_pending", "out_result",
        "webhook_error", "event", "echo", "mark_read", "media_upload"
    };

    return type <= WA_REC_TYPE_MAX ? names[type] : names[0];
}


int
wa_record_put(wa_ring_t *ring, const wa_record_t *rec, uint64_t keep)
{
    int              rc;
    size_t           size;
    wa_ring_claim_t  claim;

    size = wa_record_size(rec);

    if (size > wa_ring_max_payload(ring)) {
        return WA_RING_TOO_BIG;
    }

    rc = wa_ring_claim_keep(ring, rec->type, (uint32_t) size, keep, &claim);

    if (rc != WA_RING_OK) {
        return rc;
    }

    wa_record_encode(rec, claim.payload);

    return wa_ring_commit(ring, &claim);
}
