/* conf_internal.h — the key table and the helpers the conf module shares.
 *
 * The configuration is described by data, not code: an array of sections
 * (conf_sections), each with an array of keys. A key row says what text it
 * accepts (its type and range), its default as text, a one-line description,
 * and where its value lands (offset inside the section's struct). The loader,
 * cxr_conf_print(), cxr_conf_schema_xsd() and cxr_conf_doc_markdown() only
 * walk these tables.
 *
 * Sections are addressed through a base pointer (conf + section offset), and
 * key offsets are relative to that base, so a later REPEATED section (several
 * <destination> elements, each a struct in an array) only needs a section row
 * with a count offset, an element size and a maximum: the per-key code
 * (parse, format, free, defaults) is already base-relative.
 */
#ifndef CXR_CONF_INTERNAL_H
#define CXR_CONF_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cxr/conf.h"

/* What text a key accepts. */
enum conf_type {
    CONF_T_TEXT,     /* free text (no control characters), length limits */
    CONF_T_LO,       /* DICOM LO: text without backslash, at most 64 characters */
    CONF_T_NAME,     /* a word of A-Z a-z 0-9 _ - */
    CONF_T_PATH,     /* a file or folder path; relative = against the config file's folder */
    CONF_T_UID,      /* empty, or a DICOM UID (PS3.5 9.1) */
    CONF_T_INT,      /* a decimal integer in [min, max] */
    CONF_T_BOOL,     /* true | false (also 1 | 0, as xs:boolean) */
    CONF_T_ENUM,     /* one of `words` */
    CONF_T_LIST,     /* min..max whitespace-separated DICOM CS tokens */
    CONF_T_THRESHOLD /* a probability 0..1, or the word "model" (stored as -1) */
};

/* How the value is stored in the struct. */
enum conf_store {
    CONF_S_STRPTR, /* char * (malloc'd, owned by the struct) */
    CONF_S_CHARS,  /* char[size] */
    CONF_S_I32,    /* int32_t */
    CONF_S_ENUM,   /* a C enum (int-sized): the index of the word in `words` */
    CONF_S_BOOL,   /* bool */
    CONF_S_DOUBLE, /* double */
    CONF_S_LIST    /* struct cxr_conf_list */
};

#define CONF_MAX_WORDS       8
#define CONF_THRESHOLD_MODEL (-1.0) /* the stored value of the word "model" */

struct conf_key {
    const char *name; /* element name, lower-case, hyphenated */
    enum conf_type type;
    enum conf_store store;
    size_t offset;    /* inside the section's struct */
    size_t size;      /* sizeof the field */
    int64_t min, max; /* INT: value range; text types: length; LIST: item count */
    const char
        *words[CONF_MAX_WORDS]; /* ENUM: allowed words, index = stored value; NULL-terminated */
    const char *def;            /* default as text (parsed like a file value) */
    const char *desc;           /* one line; must not contain "--" (XML comment) */
    bool restart;               /* the node reads it only at start (not on reload) */
};

struct conf_section {
    const char *name; /* element name under <cxr-triage> */
    size_t offset;    /* inside struct cxr_conf */
    const char *desc;
    const struct conf_key *keys;
    size_t nkeys;
    /* A repeated section (<destination> several times) has max_count > 0:
     * its elements are an array at `offset` of elem_size bytes each, and the
     * uint32_t at count_offset says how many are used. */
    size_t max_count;
    size_t elem_size;
    size_t count_offset;
};

/* "a must not be greater than b": a cross-key rule the XSD cannot express. */
struct conf_order_rule {
    const char *lo; /* "gate/min-rows" */
    const char *hi; /* "gate/max-rows" */
};

extern const struct conf_section conf_sections[];
extern const size_t conf_nsections;
extern const struct conf_order_rule conf_order_rules[];
extern const size_t conf_norder_rules;

/* Table look-ups. conf_key_find takes "section/key"; NULL when unknown. */
const struct conf_section *conf_section_find(const char *name);
const struct conf_key *conf_section_key(const struct conf_section *sec, const char *name);
const struct conf_key *conf_key_find(const char *path, const struct conf_section **sec_out);
/* A flat index over all keys (0..conf_key_total()-1), for per-key bookkeeping. */
size_t conf_key_total(void);
size_t conf_key_index(const struct conf_section *sec, const struct conf_key *key);

/* Pointer to the section's struct inside conf (element 0 of a repeated one). */
void *conf_section_base(const struct cxr_conf *conf, const struct conf_section *sec);
/* Repeated sections: element i's struct, and the count of elements used
 * (a singular section always has exactly one). */
void *conf_section_elem(const struct cxr_conf *conf, const struct conf_section *sec, size_t i);
size_t conf_section_count(const struct cxr_conf *conf, const struct conf_section *sec);
uint32_t *conf_section_count_ptr(struct cxr_conf *conf, const struct conf_section *sec);
/* Sets every key of one section struct (an element) to its default. */
enum cxr_status conf_section_defaults(const struct conf_section *sec, void *base);

/* Describes what a key accepts, as in "an integer 0..256"; used by error
 * messages, the XML comments and the Markdown table. Returns buf. */
const char *conf_key_expected(const struct conf_key *key, char *buf, size_t len);

/* Parses `text` (already trimmed) for `key` and stores it at base+offset.
 * On failure returns CXR_ERR_CONF_VALUE and writes what was expected into
 * `why` (e.g. "expected an integer 0..256"); the stored value is unchanged.
 * CXR_ERR_NOMEM when a string copy fails. */
enum cxr_status conf_value_parse(const struct conf_key *key, const char *text, void *base,
                                 char *why, size_t whylen);

/* Formats the stored value as the text the loader accepts (round trip).
 * Returns CXR_ERR_LIMIT when `len` is too small (the text is truncated). */
enum cxr_status conf_value_format(const struct conf_key *key, const void *base, char *buf,
                                  size_t len);

/* Frees what a key owns (CONF_S_STRPTR) and leaves the field NULL. */
void conf_value_free(const struct conf_key *key, void *base);

/* Checks the table against itself (defaults parse, descriptions are safe in
 * XML comments, storage sizes match types). Returns CXR_OK or
 * CXR_ERR_INTERNAL with the first problem in `why`. */
enum cxr_status conf_table_check(char *why, size_t whylen);

/* A growable text buffer for the generators; `failed` sticks after an
 * allocation failure. */
struct conf_buf {
    char *data;
    size_t len, cap;
    bool failed;
};
void conf_buf_printf(struct conf_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void conf_buf_puts(struct conf_buf *b, const char *s);
/* Appends s with & < > " escaped for XML text and attribute values. */
void conf_buf_xml_escape(struct conf_buf *b, const char *s);

/* snprintf into a CXR_ERRLEN buffer that may be NULL. */
void conf_err(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
