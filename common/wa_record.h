/*
 * wa_record: the payload of one ring record, shared by the module (encoder)
 * and the writer (decoder). Plain C, no nginx dependency.
 *
 * Encoding: a sequence of fields, each  [u8 tag][u32 length, little endian]
 * [length bytes]; absent fields are not written. Every value is text (numbers
 * in decimal) so the writer hands them to PostgreSQL as text parameters.
 * The ring record's type (wa_ring_rec_hdr_t.type) is the record type below.
 */

#ifndef WA_RECORD_H
#define WA_RECORD_H

#include <stddef.h>
#include <stdint.h>
#include "wa_ring.h"


/* record types */
#define WA_REC_IN_MESSAGE     1   /* inbound message from a webhook */
#define WA_REC_STATUS         2   /* sent/delivered/read/failed receipt */
#define WA_REC_OUT_PENDING    3   /* outbound message, before the API call */
#define WA_REC_OUT_RESULT     4   /* outcome of the API call */
#define WA_REC_WEBHOOK_ERROR  5   /* value.errors[] of a webhook change */
#define WA_REC_EVENT          6   /* a change of a field, or shape, with no
                                     structured handling: its value, raw */
#define WA_REC_ECHO           7   /* smb_message_echoes: a message the
                                     business sent from the Business app */
#define WA_REC_MARK_READ      8   /* mark an inbound message read (and show
                                     the typing indicator): status
                                     "pending" before the API call, then
                                     its outcome, under one local id */
#define WA_REC_MEDIA_UPLOAD   9   /* a file uploaded to the media endpoint:
                                     "pending" before, then the outcome
                                     with the media id and sha256 */
#define WA_REC_TYPE_MAX       9


/* field tags */
enum {
    WA_F_BUSINESS = 1,     /* CRM business (tenant) id, decimal */
    WA_F_PHONE_NUMBER_ID,  /* our WhatsApp phone number id */
    WA_F_PHONE,            /* customer's phone, E.164 digits, no '+' */
    WA_F_WA_USER_ID,       /* business-scoped user id (user_id/from_user_id) */
    WA_F_NAME,             /* contacts[].profile.name */
    WA_F_WAMID,            /* provider message id */
    WA_F_MSG_TYPE,         /* text, image, template, ... */
    WA_F_BODY,             /* text body, caption, or a short rendering */
    WA_F_TIMESTAMP,        /* provider timestamp, unix seconds */
    WA_F_PAYLOAD,          /* the raw provider object, JSON */
    WA_F_STATUS,           /* sent, delivered, read, played, failed, ... */
    WA_F_ERROR_CODE,
    WA_F_ERROR_TITLE,
    WA_F_ERROR_DETAIL,
    WA_F_LOCAL_ID,         /* our id of an outbound message */
    WA_F_LEAD_ID,          /* given by the send request */
    WA_F_SOURCE,           /* bot, manual, api, ... */
    WA_F_CLIENT_REF,       /* idempotency key of a send */
    WA_F_FBTRACE_ID,
    WA_F_RETRYABLE,        /* "1" or "0" for a failed send */
    WA_F_CALLBACK_DATA,    /* biz_opaque_callback_data (our local id) */
    WA_F_HTTP_STATUS,      /* provider HTTP status of a send */
    WA_F_RECEIVED_MS,      /* when nginx accepted it, unix ms */
    WA_F_ATTEMPT,          /* a send's attempt under its local id, decimal;
                              absent: 1 */
    WA_F_FIELD,            /* entry[].changes[].field of a webhook */
    WA_F_WABA_ID,          /* entry[].id: the WhatsApp Business Account */
    WA_F_CONTACT,          /* the sender's value.contacts[] entry, JSON */
    WA_F_MEDIA_ID,         /* the Cloud API's id of an uploaded file */
    WA_F_MIME_TYPE,        /* an uploaded file's Content-Type */
    WA_F_SIZE,             /* an uploaded file's size in bytes, decimal */
    WA_F_SHA256,           /* hex SHA-256 of an uploaded file's bytes */
    WA_F__MAX
};


typedef struct {
    const char  *data;        /* NULL: absent */
    uint32_t     len;
} wa_field_t;


typedef struct {
    uint16_t     type;
    wa_field_t   f[WA_F__MAX];
} wa_record_t;


#define WA_FIELD_HDR  5

/* payload bytes the record needs */
size_t wa_record_size(const wa_record_t *rec);

/* write the record to dst, which has wa_record_size() bytes */
void wa_record_encode(const wa_record_t *rec, unsigned char *dst);

/*
 * Publish the record in the ring: claim, encode in place, commit, leaving
 * keep bytes free (0, or wa_ring_keep() for a record that opens a call).
 * WA_RING_OK (stored), WA_RING_FULL, WA_RING_TOO_BIG or WA_RING_ABANDONED
 * (the consumer gave up on the claim: not stored).
 */
int wa_record_put(wa_ring_t *ring, const wa_record_t *rec, uint64_t keep);

/* parse a payload; fields point into src. 0, or -1 for a malformed payload
 * (unknown type, unknown tag, length past the end, duplicate tag). */
int wa_record_decode(wa_record_t *rec, uint16_t type, const unsigned char *src,
    size_t len);

/* set a field from a NUL-terminated string (NULL leaves it absent) */
void wa_record_set(wa_record_t *rec, int tag, const char *s);

const char *wa_record_type_name(uint16_t type);

#endif /* WA_RECORD_H */
