/* conf_text.h — text helpers private to the conf module (see conf_text.c). */
#ifndef CXR_CONF_TEXT_H
#define CXR_CONF_TEXT_H

#include <stddef.h>

/* Copies `text` for quoting in a message: control characters become '?',
 * and text longer than the buffer ends in "...". Returns buf. */
const char *conf_quote(const char *text, char *buf, size_t len);

/* strtod / "%.*f" in the C locale, whatever LC_NUMERIC the process uses. */
double conf_strtod(const char *s, char **end);
int conf_format_fixed(char *buf, size_t len, int decimals, double v);

#endif
