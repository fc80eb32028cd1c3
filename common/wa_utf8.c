/*
 * wa_utf8_len: Unicode's table of well-formed byte sequences (Unicode 15,
 * table 3-7): each lead byte allows a narrower range for its second byte,
 * which rules out overlong forms, surrogates and code points over U+10FFFF
 * without decoding.
 */

#include "wa_utf8.h"


size_t
wa_utf8_len(const unsigned char *s, size_t n)
{
    size_t         len, k;
    unsigned char  lo, hi;

    if (s[0] < 0x80) {
        return 1;
    }

    lo = 0x80;
    hi = 0xbf;

    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2;

    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3;
        lo = (s[0] == 0xe0) ? 0xa0 : 0x80;    /* overlong */
        hi = (s[0] == 0xed) ? 0x9f : 0xbf;    /* UTF-16 surrogates */

    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4;
        lo = (s[0] == 0xf0) ? 0x90 : 0x80;    /* overlong */
        hi = (s[0] == 0xf4) ? 0x8f : 0xbf;    /* over U+10FFFF */

    } else {
        return 0;
    }

    if (n < len || s[1] < lo || s[1] > hi) {
        return 0;
    }

    for (k = 2; k < len; k++) {
        if (s[k] < 0x80 || s[k] > 0xbf) {
            return 0;
        }
    }

    return len;
}
