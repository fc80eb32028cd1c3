/*
 * wa_media_types: the file name extension a stored media file gets from
 * its MIME type, and back. The fetcher names files by it; nginx's
 * wa_media_serve answers with the MIME type of the name, so a file served
 * has the type Meta gave it without a lookup. Plain C, shared.
 */

#ifndef WA_MEDIA_TYPES_H
#define WA_MEDIA_TYPES_H

#include <stddef.h>

/* the extension (no dot) of a MIME type, parameters ignored ("audio/ogg;
 * codecs=opus" is "ogg"); "bin" for a type not in the table */
const char *wa_media_ext(const char *mime, size_t len);

/* the MIME type of an extension; "application/octet-stream" if unknown */
const char *wa_media_mime(const char *ext, size_t len);

#endif /* WA_MEDIA_TYPES_H */
