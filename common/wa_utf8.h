/*
 * UTF-8 well-formedness, shared by the webhook parser (which refuses a
 * body that is not UTF-8) and the writer (which sanitizes and escapes text
 * from records). Plain C, no nginx dependency.
 */

#ifndef WA_UTF8_H
#define WA_UTF8_H

#include <stddef.h>


/*
 * The length (1-4) of the well-formed UTF-8 sequence at s, which has n >= 1
 * bytes; 0 if it is not one (a stray continuation byte, an overlong form,
 * a UTF-16 surrogate, a code point over U+10FFFF, or a sequence cut short
 * by n). An ASCII byte, NUL and control characters too, is 1.
 */
size_t wa_utf8_len(const unsigned char *s, size_t n);

#endif /* WA_UTF8_H */
