/*
 * Text helpers: one-line sanitizing for logs, JSON string
 * escaping for dead letters. Records carry whatever producers put in them,
 * so nothing here trusts its input.
 */

#include <stdlib.h>
#include <string.h>

#include "wa_writer.h"


size_t
wa_sanitize(char *dst, size_t size, const char *src, size_t len)
{
    size_t               i, n, k;
    const unsigned char  *s;
    static const char    hex[] = "0123456789abcdef";

    s = (const unsigned char *) src;
    n = 0;

    if (size == 0) {
        return 0;
    }

    for (i = 0; i < len; ) {
        k = wa_utf8_len(s + i, len - i);

        if (k == 0) {
            if (n + 4 >= size) {
                break;
            }

            dst[n++] = '\\';
            dst[n++] = 'x';
            dst[n++] = hex[s[i] >> 4];
            dst[n++] = hex[s[i] & 0xf];
            i++;
            continue;
        }

        if (n + k >= size) {
            break;
        }

        if (k == 1 && (s[i] < 0x20 || s[i] == 0x7f)) {
            /* collapse "\n  " of multi-line errors into one space */
            if (n == 0 || dst[n - 1] != ' ') {
                dst[n++] = ' ';
            }

            i++;
            continue;
        }

        if (k == 1 && s[i] == ' ' && n > 0 && dst[n - 1] == ' ') {
            i++;
            continue;
        }

        memcpy(dst + n, s + i, k);
        n += k;
        i += k;
    }

    while (n > 0 && dst[n - 1] == ' ') {
        n--;
    }

    dst[n] = '\0';

    return n;
}


/*
 * Append src as the body of a JSON string (no quotes) to the buffer.
 * Bytes that are not UTF-8, and NUL (jsonb refuses \u0000), become U+FFFD:
 * the exact bytes are kept in wa_dead_letter.raw anyway.
 */
int
wa_buf_json_escape(wa_buf_t *b, const char *src, size_t len)
{
    size_t               i, k;
    const unsigned char  *s;
    static const char    hex[] = "0123456789abcdef";

    s = (const unsigned char *) src;

    for (i = 0; i < len; i += k) {
        if (wa_buf_reserve(b, 8) != 0) {
            return -1;
        }

        k = wa_utf8_len(s + i, len - i);

        if (k == 0 || s[i] == 0) {
            memcpy(b->data + b->len, "\xef\xbf\xbd", 3);
            b->len += 3;
            k = 1;
            continue;
        }

        if (k > 1) {
            memcpy(b->data + b->len, s + i, k);
            b->len += k;
            continue;
        }

        switch (s[i]) {

        case '"':
        case '\\':
            b->data[b->len++] = '\\';
            b->data[b->len++] = (char) s[i];
            break;

        case '\n':
            b->data[b->len++] = '\\';
            b->data[b->len++] = 'n';
            break;

        case '\r':
            b->data[b->len++] = '\\';
            b->data[b->len++] = 'r';
            break;

        case '\t':
            b->data[b->len++] = '\\';
            b->data[b->len++] = 't';
            break;

        default:
            if (s[i] < 0x20 || s[i] == 0x7f) {
                memcpy(b->data + b->len, "\\u00", 4);
                b->len += 4;
                b->data[b->len++] = hex[s[i] >> 4];
                b->data[b->len++] = hex[s[i] & 0xf];

            } else {
                b->data[b->len++] = (char) s[i];
            }
        }
    }

    if (b->data != NULL) {
        b->data[b->len] = '\0';
    }

    return 0;
}


int
wa_buf_reserve(wa_buf_t *b, size_t more)
{
    char    *p;
    size_t   size;

    if (b->len + more + 1 <= b->size) {
        return 0;
    }

    size = b->size ? b->size : 256;

    while (size < b->len + more + 1) {
        size *= 2;
    }

    p = realloc(b->data, size);
    if (p == NULL) {
        return -1;
    }

    b->data = p;
    b->size = size;

    return 0;
}


int
wa_buf_add(wa_buf_t *b, const char *s, size_t len)
{
    if (wa_buf_reserve(b, len) != 0) {
        return -1;
    }

    memcpy(b->data + b->len, s, len);
    b->len += len;
    b->data[b->len] = '\0';

    return 0;
}
