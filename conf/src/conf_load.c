/* conf_load.c — reading a configuration document with libxml2.
 *
 * Order of checks, so that the first message a user sees is the most human:
 *   1. size caps, empty document;
 *   2. libxml2 parse (no network, no entity substitution, no DTD loading);
 *      any DOCTYPE is refused outright by a SAX hook that stops the parser
 *      before an internal subset is read (no billion laughs, no XXE);
 *   3. our own walk of the tree driven by the key table: unknown sections or
 *      keys, duplicates, attributes, stray text, typed values, cross-key rules
 *      — every message says file:line, the key and what was expected;
 *   4. validation against the XSD generated from the same table (a safety net:
 *      anything the walk accepted must also satisfy the schema).
 *
 * libxml2's errors are captured through structured handlers set on each
 * parser/schema context. While a load runs, the calling thread's own
 * (thread-local in libxml2's threaded builds) generic and structured
 * handlers point into this load's state too, and are restored afterwards:
 * nothing is ever printed, and other threads are not affected.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlschemas.h>
#include <libxml/xmlschemastypes.h>

#include "conf_internal.h"
#include "cxr/file.h"
#include "conf_text.h"

#define CONF_MAX_FILE (1u << 20) /* a configuration is a few KB; refuse anything over 1 MiB */
#define ROOT_NAME     "cxr-triage"
#define CONF_VERSION  "1"

#if LIBXML_VERSION >= 21200
typedef const xmlError *conf_xml_error_t;
#else
typedef xmlErrorPtr conf_xml_error_t;
#endif

struct load_state {
    const char *name;   /* file name used in messages */
    char *err;          /* CXR_ERRLEN bytes */
    enum cxr_status st; /* first failure, CXR_OK while none */
    bool doctype;       /* a DOCTYPE was seen (and the parse stopped) */
    long doctype_line;
    int xml_line; /* first libxml2 error */
    char xml_msg[512];
    int *lines; /* per key (conf_key_index): line where it was set, 0 = absent */
};

/* Records the first failure; later ones are dropped (the first is the cause). */
static void fail(struct load_state *ls, enum cxr_status st, long line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(struct load_state *ls, enum cxr_status st, long line, const char *fmt, ...)
{
    if (ls->st != CXR_OK)
        return;
    ls->st = st;
    char msg[CXR_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0)
        conf_err(ls->err, "%s:%ld: %s", ls->name, line, msg);
    else
        conf_err(ls->err, "%s: %s", ls->name, msg);
}

static void keep_xml_error(struct load_state *ls, conf_xml_error_t e)
{
    if (!e || e->level < XML_ERR_ERROR || ls->xml_msg[0])
        return;
    ls->xml_line = e->line;
    snprintf(ls->xml_msg, sizeof ls->xml_msg, "%s",
             e->message ? e->message : "unknown libxml2 error");
    size_t n = strlen(ls->xml_msg);
    while (n && (ls->xml_msg[n - 1] == '\n' || ls->xml_msg[n - 1] == ' '))
        ls->xml_msg[--n] = '\0';
}

/* Structured handler of the parser context: libxml2 passes ctxt->userData,
 * which is the parser context itself; our state hangs off ctxt->_private. */
static void on_parser_error(void *ctx, conf_xml_error_t e)
{
    xmlParserCtxtPtr ctxt = ctx;
    if (ctxt && ctxt->_private)
        keep_xml_error(ctxt->_private, e);
}

/* Structured handler of the schema contexts and of this thread's fallback. */
static void on_state_error(void *state, conf_xml_error_t e)
{
    if (state)
        keep_xml_error(state, e);
}

/* This thread's generic handler during a load: swallow, keep the first text. */
static void on_generic_error(void *state, const char *fmt, ...)
{
    struct load_state *ls = state;
    if (!ls || ls->xml_msg[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ls->xml_msg, sizeof ls->xml_msg, fmt, ap);
    va_end(ap);
}

/* SAX hook: any <!DOCTYPE ...> stops the parse before its internal subset. */
static void on_doctype(void *ctx, const xmlChar *name, const xmlChar *external_id,
                       const xmlChar *system_id)
{
    xmlParserCtxtPtr ctxt = ctx;
    struct load_state *ls = ctxt->_private;
    ls->doctype = true;
    ls->doctype_line = ctxt->input ? ctxt->input->line : 0;
    xmlStopParser(ctxt);
}

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;
/* libxml2 2.9's first xmlSchemaInitTypes() (the built-in XSD types, global)
 * is not thread-safe: two threads parsing a schema at once each build the
 * table and one leaks it. Both run once here, before any parse. */
static void xml_init(void)
{
    xmlInitParser();
    xmlSchemaInitTypes();
}

/* Parses the bytes into a tree; NULL with ls->st set on failure. */
static xmlDocPtr parse_document(struct load_state *ls, const char *xml, size_t len)
{
    xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
    if (!ctxt) {
        fail(ls, CXR_ERR_NOMEM, 0, "out of memory creating the XML parser");
        return NULL;
    }
    ctxt->_private = ls;
    ctxt->sax->serror = on_parser_error;
    ctxt->sax->internalSubset = on_doctype;
    const int options =
        XML_PARSE_NONET | XML_PARSE_BIG_LINES; /* and NOT: NOENT, DTDLOAD, DTDATTR, HUGE */
    xmlDocPtr doc = xmlCtxtReadMemory(ctxt, xml, (int)len, ls->name, NULL, options);
    bool well_formed = ctxt->wellFormed;
    xmlFreeParserCtxt(ctxt);

    if (ls->doctype) {
        xmlFreeDoc(doc);
        fail(ls, CXR_ERR_CONF_PARSE, ls->doctype_line,
             "a DOCTYPE is not allowed in the configuration (no DTD, no entities); remove it");
        return NULL;
    }
    if (!doc || !well_formed) {
        xmlFreeDoc(doc);
        fail(ls, CXR_ERR_CONF_PARSE, ls->xml_line, "not well-formed XML: %s",
             ls->xml_msg[0] ? ls->xml_msg : "the parser gave no reason");
        return NULL;
    }
    return doc;
}

static bool is_blank(const xmlChar *s)
{
    for (; s && *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n')
            return false;
    return true;
}

/* Stray text between elements: only whitespace is allowed there. */
static bool check_text(struct load_state *ls, xmlNodePtr n, const char *where)
{
    if ((n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE) && !is_blank(n->content)) {
        char q[48];
        const char *text = (const char *)n->content;
        text += strspn(text, " \t\r\n");
        fail(ls, CXR_ERR_CONF_SCHEMA, xmlGetLineNo(n),
             "unexpected text '%s' in %s; expected only elements", conf_quote(text, q, sizeof q),
             where);
        return false;
    }
    if (n->type == XML_ENTITY_REF_NODE) {
        fail(ls, CXR_ERR_CONF_SCHEMA, xmlGetLineNo(n), "entity references are not allowed");
        return false;
    }
    return true;
}

static bool check_no_ns(struct load_state *ls, xmlNodePtr n)
{
    if (n->ns) {
        fail(ls, CXR_ERR_CONF_SCHEMA, xmlGetLineNo(n),
             "element <%s> is in a namespace; configuration elements take no namespace", n->name);
        return false;
    }
    return true;
}

/* The value text of a key element: its text and CDATA, trimmed. Comments
 * inside are skipped; a child element or attribute is an error. Caller frees. */
static char *key_text(struct load_state *ls, xmlNodePtr el, const char *path)
{
    if (el->properties) {
        fail(ls, CXR_ERR_CONF_SCHEMA, xmlGetLineNo(el),
             "key '%s': attribute '%s' is not allowed; write the value as the element's text", path,
             el->properties->name);
        return NULL;
    }
    struct conf_buf b = {0};
    conf_buf_puts(&b, "");
    for (xmlNodePtr c = el->children; c; c = c->next) {
        if (c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) {
            conf_buf_puts(&b, (const char *)c->content);
        } else if (c->type == XML_ELEMENT_NODE) {
            fail(ls, CXR_ERR_CONF_SCHEMA, xmlGetLineNo(c),
                 "key '%s': unexpected element <%s>; the key holds a value, not elements", path,
                 c->name);
            free(b.data);
            return NULL;
        } else if (c->type == XML_ENTITY_REF_NODE) {
            fail(ls, CXR_ERR_CONF_SCHEMA, xmlGetLineNo(c),
                 "key '%s': entity references are not allowed", path);
            free(b.data);
            return NULL;
        }
    }
    if (b.failed) {
        free(b.data);
        fail(ls, CXR_ERR_NOMEM, 0, "out of memory");
        return NULL;
    }
    char *s = b.data, *e = b.data + b.len;
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        e--;
    *e = '\0';
    memmove(b.data, s, (size_t)(e - s) + 1);
    return b.data;
}

static void list_keys(const struct conf_section *sec, char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sec->nkeys && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%s", i ? ", " : "", sec->keys[i].name);
}

/* Applies one section element to the section struct at `base`. */
static void load_section(struct load_state *ls, const struct conf_section *sec, void *base,
                         xmlNodePtr el)
{
    char where[64];
    snprintf(where, sizeof where, "<%s>", sec->name);
    if (el->properties) {
        fail(ls, CXR_ERR_CONF_SCHEMA, xmlGetLineNo(el),
             "section <%s>: attribute '%s' is not allowed", sec->name, el->properties->name);
        return;
    }
    for (xmlNodePtr c = el->children; c && ls->st == CXR_OK; c = c->next) {
        if (c->type != XML_ELEMENT_NODE) {
            check_text(ls, c, where);
            continue;
        }
        if (!check_no_ns(ls, c))
            return;
        long line = xmlGetLineNo(c);
        const struct conf_key *key = conf_section_key(sec, (const char *)c->name);
        if (!key) {
            char valid[512];
            list_keys(sec, valid, sizeof valid);
            fail(ls, CXR_ERR_CONF_SCHEMA, line, "unknown key '%s/%s'; valid keys of <%s>: %s",
                 sec->name, c->name, sec->name, valid);
            return;
        }
        char path[128];
        snprintf(path, sizeof path, "%s/%s", sec->name, key->name);
        int *seen = &ls->lines[conf_key_index(sec, key)];
        if (*seen) {
            fail(ls, CXR_ERR_CONF_SCHEMA, line, "key '%s' appears twice (first at line %d)", path,
                 *seen);
            return;
        }
        *seen = line > 0 && line <= INT_MAX ? (int)line : 1;
        char *text = key_text(ls, c, path);
        if (!text)
            return;
        char why[512];
        enum cxr_status st = conf_value_parse(key, text, base, why, sizeof why);
        free(text);
        if (st != CXR_OK)
            fail(ls, st, line, "key '%s': %s", path, why);
    }
}

/* Cross-key rules: lo <= hi (thresholds only when both are numbers). */
static void check_order(struct load_state *ls, const struct cxr_conf *conf)
{
    for (size_t r = 0; r < conf_norder_rules && ls->st == CXR_OK; r++) {
        const struct conf_section *slo = NULL, *shi = NULL;
        const struct conf_key *lo = conf_key_find(conf_order_rules[r].lo, &slo);
        const struct conf_key *hi = conf_key_find(conf_order_rules[r].hi, &shi);
        const char *blo = (const char *)conf_section_base(conf, slo) + lo->offset;
        const char *bhi = (const char *)conf_section_base(conf, shi) + hi->offset;
        bool wrong;
        if (lo->store == CONF_S_I32) {
            int32_t a, b;
            memcpy(&a, blo, sizeof a);
            memcpy(&b, bhi, sizeof b);
            wrong = a > b;
        } else {
            double a, b;
            memcpy(&a, blo, sizeof a);
            memcpy(&b, bhi, sizeof b);
            wrong = a >= 0 && b >= 0 && a > b;
        }
        if (!wrong)
            continue;
        /* Blame the key the file set last (or the one it set at all). */
        int line_lo = ls->lines[conf_key_index(slo, lo)],
            line_hi = ls->lines[conf_key_index(shi, hi)];
        bool blame_hi = line_hi >= line_lo;
        char vlo[64], vhi[64];
        conf_value_format(lo, conf_section_base(conf, slo), vlo, sizeof vlo);
        conf_value_format(hi, conf_section_base(conf, shi), vhi, sizeof vhi);
        if (blame_hi)
            fail(ls, CXR_ERR_CONF_VALUE, line_hi, "key '%s': expected a value >= %s (%s), got '%s'",
                 conf_order_rules[r].hi, conf_order_rules[r].lo, vlo, vhi);
        else
            fail(ls, CXR_ERR_CONF_VALUE, line_lo, "key '%s': expected a value <= %s (%s), got '%s'",
                 conf_order_rules[r].lo, conf_order_rules[r].hi, vhi, vlo);
    }
}

static void load_root(struct load_state *ls, xmlNodePtr root, struct cxr_conf *conf)
{
    if (!root) {
        fail(ls, CXR_ERR_CONF_PARSE, 1, "no root element; expected <" ROOT_NAME " version=\"1\">");
        return;
    }
    if (strcmp((const char *)root->name, ROOT_NAME) || root->ns) {
        fail(ls, CXR_ERR_CONF_SCHEMA, xmlGetLineNo(root),
             "root element is <%s%s%s>; expected <" ROOT_NAME " version=\"" CONF_VERSION
             "\"> (no namespace)",
             root->ns && root->ns->prefix ? (const char *)root->ns->prefix : "",
             root->ns && root->ns->prefix ? ":" : "", root->name);
        return;
    }
    for (xmlAttrPtr a = root->properties; a && ls->st == CXR_OK; a = a->next) {
        if (strcmp((const char *)a->name, "version") || a->ns) {
            fail(ls, CXR_ERR_CONF_SCHEMA, xmlGetLineNo(root),
                 "attribute '%s' is not allowed on <" ROOT_NAME ">; only version=\"" CONF_VERSION
                 "\"",
                 a->name);
            return;
        }
        xmlChar *v = xmlNodeListGetString(root->doc, a->children, 1);
        if (!v || strcmp((const char *)v, CONF_VERSION)) {
            char q[48];
            fail(
                ls, CXR_ERR_UNSUPPORTED, xmlGetLineNo(root),
                "configuration version '%s' is not supported; this build reads version " CONF_VERSION,
                conf_quote(v ? (const char *)v : "", q, sizeof q));
        }
        xmlFree(v);
    }
    long *section_line = calloc(conf_nsections, sizeof *section_line);
    if (!section_line) {
        fail(ls, CXR_ERR_NOMEM, 0, "out of memory");
        return;
    }
    for (xmlNodePtr c = root->children; c && ls->st == CXR_OK; c = c->next) {
        if (c->type != XML_ELEMENT_NODE) {
            check_text(ls, c, "<" ROOT_NAME ">");
            continue;
        }
        if (!check_no_ns(ls, c))
            break;
        const struct conf_section *sec = conf_section_find((const char *)c->name);
        if (!sec) {
            char valid[256];
            size_t n = 0;
            valid[0] = '\0';
            for (size_t i = 0; i < conf_nsections; i++)
                n += (size_t)snprintf(valid + n, sizeof valid - n, "%s%s", i ? ", " : "",
                                      conf_sections[i].name);
            fail(ls, CXR_ERR_CONF_SCHEMA, xmlGetLineNo(c),
                 "unknown section <%s>; valid sections: %s", c->name, valid);
            break;
        }
        size_t si = (size_t)(sec - conf_sections);
        if (sec->max_count) {
            /* A repeated section: one more element, starting from the defaults;
             * a key may appear once per element. */
            uint32_t *count = conf_section_count_ptr(conf, sec);
            if (*count >= sec->max_count) {
                fail(ls, CXR_ERR_CONF_SCHEMA, xmlGetLineNo(c),
                     "too many <%s> sections (at most %zu)", sec->name, sec->max_count);
                break;
            }
            void *elem = conf_section_elem(conf, sec, *count);
            enum cxr_status st = conf_section_defaults(sec, elem);
            if (st != CXR_OK) {
                fail(ls, st, 0, "out of memory");
                break;
            }
            (*count)++;
            for (size_t k = 0; k < sec->nkeys; k++)
                ls->lines[conf_key_index(sec, &sec->keys[k])] = 0;
            load_section(ls, sec, elem, c);
            continue;
        }
        if (section_line[si]) {
            fail(ls, CXR_ERR_CONF_SCHEMA, xmlGetLineNo(c),
                 "section <%s> appears twice (first at line %ld)", sec->name, section_line[si]);
            break;
        }
        section_line[si] = xmlGetLineNo(c) > 0 ? xmlGetLineNo(c) : 1;
        load_section(ls, sec, conf_section_base(conf, sec), c);
    }
    free(section_line);
    if (ls->st == CXR_OK)
        check_order(ls, conf);
}

/* The safety net: the document must also satisfy the generated XSD. */
static void validate_schema(struct load_state *ls, xmlDocPtr doc)
{
    const char *xsd = cxr_conf_schema_xsd();
    xmlSchemaParserCtxtPtr pctxt = xmlSchemaNewMemParserCtxt(xsd, (int)strlen(xsd));
    xmlSchemaPtr schema = NULL;
    xmlSchemaValidCtxtPtr vctxt = NULL;
    if (!pctxt) {
        fail(ls, CXR_ERR_NOMEM, 0, "out of memory creating the schema parser");
        goto done;
    }
    xmlSchemaSetParserStructuredErrors(pctxt, on_state_error, ls);
    schema = xmlSchemaParse(pctxt);
    if (!schema) {
        fail(ls, CXR_ERR_INTERNAL, 0, "the built-in XSD does not compile (a bug): %s", ls->xml_msg);
        goto done;
    }
    vctxt = xmlSchemaNewValidCtxt(schema);
    if (!vctxt) {
        fail(ls, CXR_ERR_NOMEM, 0, "out of memory creating the schema validator");
        goto done;
    }
    xmlSchemaSetValidStructuredErrors(vctxt, on_state_error, ls);
    int rc = xmlSchemaValidateDoc(vctxt, doc);
    if (rc != 0)
        fail(ls, rc > 0 ? CXR_ERR_CONF_SCHEMA : CXR_ERR_INTERNAL, ls->xml_line,
             "does not match cxr-triage.xsd: %s", ls->xml_msg[0] ? ls->xml_msg : "no reason given");
done:
    xmlSchemaFreeValidCtxt(vctxt);
    xmlSchemaFree(schema);
    xmlSchemaFreeParserCtxt(pctxt);
}

/* The common path of cxr_conf_load and cxr_conf_load_memory; `source` is
 * stored as conf->source_path ("" for memory documents). */
static enum cxr_status load_memory(const char *xml, size_t len, const char *name,
                                   const char *source, struct cxr_conf **out, char *err)
{
    struct load_state ls = {.name = name ? name : "<memory>", .err = err};
    struct cxr_conf *conf = NULL;
    xmlDocPtr doc = NULL;
    if (len > CONF_MAX_FILE) {
        fail(&ls, CXR_ERR_LIMIT, 0, "too large (%zu bytes; a configuration may have at most %u)",
             len, CONF_MAX_FILE);
        goto fail;
    }
    size_t nonblank = 0;
    while (nonblank < len && strchr(" \t\r\n", xml[nonblank]) && xml[nonblank])
        nonblank++;
    if (nonblank == len) {
        fail(&ls, CXR_ERR_CONF_PARSE, 1,
             "empty file; expected an XML document with root <" ROOT_NAME " version=\"" CONF_VERSION
             "\">");
        goto fail;
    }
    enum cxr_status st = cxr_conf_defaults(&conf);
    if (st != CXR_OK) {
        fail(&ls, st, 0, "cannot build the defaults: %s", cxr_status_str(st));
        goto fail;
    }
    ls.lines = calloc(conf_key_total(), sizeof *ls.lines);
    if (!ls.lines) {
        fail(&ls, CXR_ERR_NOMEM, 0, "out of memory");
        goto fail;
    }
    pthread_once(&xml_once, xml_init);
    /* This thread's fallback handlers (thread-local in libxml2), restored below. */
    xmlStructuredErrorFunc old_serror = xmlStructuredError;
    void *old_sctx = xmlStructuredErrorContext;
    xmlGenericErrorFunc old_generic = xmlGenericError;
    void *old_gctx = xmlGenericErrorContext;
    xmlSetStructuredErrorFunc(&ls, on_state_error);
    xmlSetGenericErrorFunc(&ls, on_generic_error);

    doc = parse_document(&ls, xml, len);
    if (doc)
        load_root(&ls, xmlDocGetRootElement(doc), conf);
    if (doc && ls.st == CXR_OK) {
        ls.xml_msg[0] = '\0';
        ls.xml_line = 0;
        validate_schema(&ls, doc);
    }

    xmlSetStructuredErrorFunc(old_sctx, old_serror);
    xmlSetGenericErrorFunc(old_gctx, old_generic);
    if (ls.st != CXR_OK)
        goto fail;
    free(conf->source_path);
    conf->source_path = strdup(source);
    if (!conf->source_path) {
        fail(&ls, CXR_ERR_NOMEM, 0, "out of memory");
        goto fail;
    }
    xmlFreeDoc(doc);
    free(ls.lines);
    *out = conf;
    return CXR_OK;
fail:
    xmlFreeDoc(doc);
    free(ls.lines);
    cxr_conf_free(conf);
    return ls.st;
}

enum cxr_status cxr_conf_load_memory(const char *xml, size_t len, const char *name,
                                     struct cxr_conf **out, char *err)
{
    if (err)
        err[0] = '\0';
    if (!out)
        return CXR_ERR_INVALID_ARG;
    *out = NULL;
    if (!xml && len) {
        conf_err(err, "%s: no document", name ? name : "<memory>");
        return CXR_ERR_INVALID_ARG;
    }
    return load_memory(xml ? xml : "", len, name, "", out, err);
}

enum cxr_status cxr_conf_load(const char *path, struct cxr_conf **out, char *err)
{
    if (err)
        err[0] = '\0';
    if (!out)
        return CXR_ERR_INVALID_ARG;
    *out = NULL;
    if (!path || !*path) {
        conf_err(err, "no configuration file given");
        return CXR_ERR_INVALID_ARG;
    }
    enum cxr_status st;
    char *data = NULL;
    /* a FIFO or a device named as the configuration must not hang the node
     * or `config check`: only a regular file is opened */
    struct stat sb;
    int fd = cxr_file_open_regular(path, &sb, &st, err);
    if (fd < 0)
        return st;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int e = errno;
        close(fd);
        conf_err(err, "%s: cannot open: %s", path, strerror(e));
        return CXR_ERR_IO;
    }
    if (sb.st_size > (off_t)CONF_MAX_FILE) {
        conf_err(err, "%s: too large (%lld bytes; a configuration may have at most %u)", path,
                 (long long)sb.st_size, CONF_MAX_FILE);
        st = CXR_ERR_LIMIT;
        goto done;
    }
    size_t len = (size_t)sb.st_size;
    data = malloc(len + 1);
    if (!data) {
        st = CXR_ERR_NOMEM;
        goto done;
    }
    if (fread(data, 1, len, f) != len || ferror(f)) {
        conf_err(err, "%s: read failed: %s", path, strerror(errno));
        st = CXR_ERR_IO;
        goto done;
    }
    data[len] = '\0';
    char *abs = realpath(path, NULL);
    st = load_memory(data, len, path, abs ? abs : path, out, err);
    free(abs);
done:
    free(data);
    fclose(f);
    return st;
}
