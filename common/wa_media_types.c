/*
 * wa_media_types: MIME type <-> file extension for the media types the
 * Cloud API supports (its "Supported media types" list), one row each.
 */

#include <string.h>
#include <strings.h>

#include "wa_media_types.h"


typedef struct {
    const char  *mime;
    const char  *ext;
} wa_media_type_t;

static const wa_media_type_t  wa_media_types[] = {
    { "image/jpeg", "jpg" },
    { "image/png", "png" },
    { "image/webp", "webp" },
    { "video/mp4", "mp4" },
    { "video/3gpp", "3gp" },
    { "audio/aac", "aac" },
    { "audio/amr", "amr" },
    { "audio/mpeg", "mp3" },
    { "audio/mp4", "m4a" },
    { "audio/ogg", "ogg" },
    { "text/plain", "txt" },
    { "application/pdf", "pdf" },
    { "application/msword", "doc" },
    { "application/vnd.ms-excel", "xls" },
    { "application/vnd.ms-powerpoint", "ppt" },
    { "application/vnd.openxmlformats-officedocument.wordprocessingml."
      "document", "docx" },
    { "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
      "xlsx" },
    { "application/vnd.openxmlformats-officedocument.presentationml."
      "presentation", "pptx" },
    { NULL, NULL }
};


const char *
wa_media_ext(const char *mime, size_t len)
{
    size_t                  n;
    const wa_media_type_t  *t;

    /* "audio/ogg; codecs=opus": the type is what precedes the parameters */
    for (n = 0; n < len && mime[n] != ';' && mime[n] != ' '; n++) {
        /* void */
    }

    for (t = wa_media_types; t->mime; t++) {
        if (strlen(t->mime) == n && strncasecmp(t->mime, mime, n) == 0) {
            return t->ext;
        }
    }

    return "bin";
}


const char *
wa_media_mime(const char *ext, size_t len)
{
    const wa_media_type_t  *t;

    for (t = wa_media_types; t->mime; t++) {
        if (strlen(t->ext) == len && strncmp(t->ext, ext, len) == 0) {
            return t->mime;
        }
    }

    return "application/octet-stream";
}
