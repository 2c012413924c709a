/* conf_gen.c — everything generated from the key table: the XSD, the
 * Markdown key table of docs/configuration.md, and the printed effective
 * configuration (which is also the shipped conf/cxr-triage.xml). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf_internal.h"

#define VALUE_MAX (CXR_CONF_MAX_LIST * 65 + 4096)

static const char *type_word(const struct conf_key *k)
{
    switch (k->type) {
    case CONF_T_TEXT: return "text";
    case CONF_T_LO: return "text (DICOM LO)";
    case CONF_T_NAME: return "word";
    case CONF_T_PATH: return "path";
    case CONF_T_UID: return "DICOM UID";
    case CONF_T_INT: return "integer";
    case CONF_T_BOOL: return "boolean";
    case CONF_T_ENUM: return "enum";
    case CONF_T_LIST: return "list";
    case CONF_T_THRESHOLD: return "threshold";
    }
    return "?";
}

/* What the docs add to the description of a key the node reads only at start. */
static const char *restart_note(const struct conf_key *k)
{
    return k->restart ? " The node applies it at its next start; a reload keeps the running value."
                      : "";
}

/* "Description. Allowed: .... Default: X." — used in XML comments and the XSD. */
static void key_note(struct conf_buf *b, const struct conf_key *k, bool xml)
{
    char exp[256];
    conf_key_expected(k, exp, sizeof exp);
    const char *def = *k->def ? k->def : "(empty)";
    if (xml) {
        conf_buf_xml_escape(b, k->desc);
        conf_buf_puts(b, restart_note(k));
        conf_buf_puts(b, " Allowed: ");
        conf_buf_xml_escape(b, exp);
        conf_buf_puts(b, ". Default: ");
        conf_buf_xml_escape(b, def);
        conf_buf_puts(b, ".");
    } else {
        conf_buf_printf(b, "%s%s Allowed: %s. Default: %s.", k->desc, restart_note(k), exp, def);
    }
}

/* ---- XSD ---------------------------------------------------------------- */

static void xsd_simple_type(struct conf_buf *b, const struct conf_key *k, const char *ind)
{
    long long lo = (long long)k->min, hi = (long long)k->max;
    switch (k->type) {
    case CONF_T_TEXT:
    case CONF_T_PATH:
    case CONF_T_LO:
    case CONF_T_NAME:
        conf_buf_printf(b, "%s<xs:restriction base=\"xs:token\">\n", ind);
        if (k->type == CONF_T_LO)
            conf_buf_printf(b, "%s  <xs:pattern value=\"[^\\\\]*\"/>\n", ind);
        if (k->type == CONF_T_NAME)
            conf_buf_printf(b, "%s  <xs:pattern value=\"[A-Za-z0-9_\\-]+\"/>\n", ind);
        if (lo > 0)
            conf_buf_printf(b, "%s  <xs:minLength value=\"%lld\"/>\n", ind, lo);
        conf_buf_printf(b, "%s  <xs:maxLength value=\"%lld\"/>\n", ind, hi);
        conf_buf_printf(b, "%s</xs:restriction>\n", ind);
        break;
    case CONF_T_UID:
        conf_buf_printf(b, "%s<xs:restriction base=\"xs:token\">\n", ind);
        conf_buf_printf(
            b, "%s  <xs:pattern value=\"(([0-9]|[1-9][0-9]+)(\\.([0-9]|[1-9][0-9]+))*)?\"/>\n",
            ind);
        conf_buf_printf(b, "%s  <xs:maxLength value=\"%lld\"/>\n", ind, hi);
        conf_buf_printf(b, "%s</xs:restriction>\n", ind);
        break;
    case CONF_T_INT:
        /* xs:integer, not xs:int: libxml2 2.9 does not collapse whitespace
         * around the derived integer types, and the loader trims values. */
        conf_buf_printf(b, "%s<xs:restriction base=\"xs:integer\">\n", ind);
        conf_buf_printf(b, "%s  <xs:minInclusive value=\"%lld\"/>\n", ind, lo);
        conf_buf_printf(b, "%s  <xs:maxInclusive value=\"%lld\"/>\n", ind, hi);
        conf_buf_printf(b, "%s</xs:restriction>\n", ind);
        break;
    case CONF_T_BOOL: conf_buf_printf(b, "%s<xs:restriction base=\"xs:boolean\"/>\n", ind); break;
    case CONF_T_ENUM:
        conf_buf_printf(b, "%s<xs:restriction base=\"xs:token\">\n", ind);
        for (int i = 0; k->words[i]; i++)
            conf_buf_printf(b, "%s  <xs:enumeration value=\"%s\"/>\n", ind, k->words[i]);
        conf_buf_printf(b, "%s</xs:restriction>\n", ind);
        break;
    case CONF_T_LIST:
        conf_buf_printf(b, "%s<xs:restriction>\n", ind);
        conf_buf_printf(b, "%s  <xs:simpleType>\n", ind);
        conf_buf_printf(b, "%s    <xs:list itemType=\"dicom-code-string\"/>\n", ind);
        conf_buf_printf(b, "%s  </xs:simpleType>\n", ind);
        conf_buf_printf(b, "%s  <xs:minLength value=\"%lld\"/>\n", ind, lo);
        conf_buf_printf(b, "%s  <xs:maxLength value=\"%lld\"/>\n", ind, hi);
        conf_buf_printf(b, "%s</xs:restriction>\n", ind);
        break;
    case CONF_T_THRESHOLD:
        conf_buf_printf(b, "%s<xs:restriction base=\"xs:token\">\n", ind);
        conf_buf_printf(
            b, "%s  <xs:pattern value=\"model|0*1(\\.0*)?|0+(\\.[0-9]*)?|0*\\.[0-9]+\"/>\n", ind);
        conf_buf_printf(b, "%s  <xs:maxLength value=\"26\"/>\n", ind);
        conf_buf_printf(b, "%s</xs:restriction>\n", ind);
        break;
    }
}

static char *xsd_text;
static pthread_once_t xsd_once = PTHREAD_ONCE_INIT;

static void xsd_build(void)
{
    struct conf_buf b = {0};
    conf_buf_puts(
        &b,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<!-- The schema of the cxr-triage configuration file (version 1).\n"
        "     Generated from the key table (conf/src/conf_keys.c) by `cxr-triage config schema`;\n"
        "     do not edit by hand. Keys are described in docs/configuration.md. -->\n"
        "<xs:schema xmlns:xs=\"http://www.w3.org/2001/XMLSchema\">\n\n"
        "  <xs:element name=\"cxr-triage\">\n"
        "    <xs:complexType>\n"
        "      <!-- Sections in any order; the loader also checks that a section that is\n"
        "           not repeatable appears at most once (XSD 1.0 cannot say both). -->\n"
        "      <xs:choice minOccurs=\"0\" maxOccurs=\"unbounded\">\n");
    for (size_t s = 0; s < conf_nsections; s++)
        conf_buf_printf(&b, "        <xs:element name=\"%s\" type=\"%s-section\"/>\n",
                        conf_sections[s].name, conf_sections[s].name);
    conf_buf_puts(&b, "      </xs:choice>\n"
                      "      <xs:attribute name=\"version\" use=\"optional\">\n"
                      "        <xs:simpleType>\n"
                      "          <xs:restriction base=\"xs:token\">\n"
                      "            <xs:enumeration value=\"1\"/>\n"
                      "          </xs:restriction>\n"
                      "        </xs:simpleType>\n"
                      "      </xs:attribute>\n"
                      "    </xs:complexType>\n"
                      "  </xs:element>\n\n"
                      "  <xs:simpleType name=\"dicom-code-string\">\n"
                      "    <xs:restriction base=\"xs:token\">\n"
                      "      <xs:pattern value=\"[A-Z0-9_]{1,16}\"/>\n"
                      "    </xs:restriction>\n"
                      "  </xs:simpleType>\n");
    for (size_t s = 0; s < conf_nsections; s++) {
        const struct conf_section *sec = &conf_sections[s];
        conf_buf_printf(&b, "\n  <xs:complexType name=\"%s-section\">\n", sec->name);
        conf_buf_puts(&b, "    <xs:annotation><xs:documentation>");
        conf_buf_xml_escape(&b, sec->desc);
        conf_buf_puts(&b, "</xs:documentation></xs:annotation>\n    <xs:all>\n");
        for (size_t i = 0; i < sec->nkeys; i++) {
            const struct conf_key *k = &sec->keys[i];
            conf_buf_printf(&b, "      <xs:element name=\"%s\" minOccurs=\"0\">\n", k->name);
            conf_buf_puts(&b, "        <xs:annotation><xs:documentation>");
            key_note(&b, k, true);
            conf_buf_puts(&b, "</xs:documentation></xs:annotation>\n        <xs:simpleType>\n");
            xsd_simple_type(&b, k, "          ");
            conf_buf_puts(&b, "        </xs:simpleType>\n      </xs:element>\n");
        }
        conf_buf_puts(&b, "    </xs:all>\n  </xs:complexType>\n");
    }
    conf_buf_puts(&b, "\n</xs:schema>\n");
    if (b.failed) {
        free(b.data);
        return;
    }
    xsd_text = b.data; /* kept for the life of the process */
}

const char *cxr_conf_schema_xsd(void)
{
    pthread_once(&xsd_once, xsd_build);
    return xsd_text ? xsd_text : "";
}

/* ---- Markdown ----------------------------------------------------------- */

static void md_cell(struct conf_buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '|')
            conf_buf_puts(b, "\\|");
        else {
            char c[2] = {*s, '\0'};
            conf_buf_puts(b, c);
        }
    }
}

char *cxr_conf_doc_markdown(void)
{
    struct conf_buf b = {0};
    conf_buf_puts(&b, "| Key | Type | Allowed values | Default | Description |\n"
                      "|---|---|---|---|---|\n");
    for (size_t s = 0; s < conf_nsections; s++) {
        const struct conf_section *sec = &conf_sections[s];
        for (size_t i = 0; i < sec->nkeys; i++) {
            const struct conf_key *k = &sec->keys[i];
            char exp[256];
            if (sec->max_count)
                conf_buf_printf(&b, "| `%s/%s` | %s, in each `<%s>` (up to %zu) | ", sec->name,
                                k->name, type_word(k), sec->name, sec->max_count);
            else
                conf_buf_printf(&b, "| `%s/%s` | %s | ", sec->name, k->name, type_word(k));
            md_cell(&b, conf_key_expected(k, exp, sizeof exp));
            conf_buf_puts(&b, " | ");
            if (*k->def) {
                conf_buf_puts(&b, "`");
                md_cell(&b, k->def);
                conf_buf_puts(&b, "`");
            } else {
                conf_buf_puts(&b, "(empty)");
            }
            conf_buf_puts(&b, " | ");
            md_cell(&b, k->desc);
            md_cell(&b, restart_note(k));
            conf_buf_puts(&b, " |\n");
        }
    }
    if (b.failed) {
        free(b.data);
        return NULL;
    }
    return b.data;
}

/* ---- the effective configuration as XML -------------------------------- */

/* Appends "<!-- text -->" word-wrapped at about 96 columns, continuation
 * lines aligned under the text. The text is raw (comments are not
 * unescaped); the table check guarantees it holds no "--". */
static void xml_comment(struct conf_buf *b, const char *indent, const char *text)
{
    const size_t width = 96;
    size_t col = strlen(indent) + 5;
    conf_buf_printf(b, "%s<!-- ", indent);
    const char *p = text;
    bool first = true;
    while (*p) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, " ");
        if (!n)
            break;
        if (!first && col + 1 + n > width) {
            conf_buf_printf(b, "\n%s     ", indent);
            col = strlen(indent) + 5;
        } else if (!first) {
            conf_buf_puts(b, " ");
            col++;
        }
        conf_buf_printf(b, "%.*s", (int)n, p);
        col += n;
        p += n;
        first = false;
    }
    conf_buf_puts(b, " -->\n");
}

static enum cxr_status print_buf(const struct cxr_conf *conf, struct conf_buf *b)
{
    conf_buf_puts(
        b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
           "<!-- cxr-triage configuration (version 1).\n"
           "     Checked against conf/cxr-triage.xsd; docs/configuration.md describes every key.\n"
           "     An omitted key takes its default. A relative path resolves against the folder\n"
           "     of this file. `cxr-triage config check FILE` validates a file and prints the\n"
           "     effective configuration; `cxr-triage config defaults` prints this one. -->\n"
           "<cxr-triage version=\"1\">\n");
    for (size_t s = 0; s < conf_nsections; s++) {
        const struct conf_section *sec = &conf_sections[s];
        size_t n = conf_section_count(conf, sec);
        conf_buf_puts(b, "\n");
        xml_comment(b, "  ", sec->desc);
        if (n == 0) {
            /* A repeated section with no element: its keys and defaults, as a
             * commented-out example. */
            conf_buf_printf(b, "  <!-- <%s>", sec->name);
            for (size_t i = 0; i < sec->nkeys; i++) {
                conf_buf_printf(b, "\n         <%s>", sec->keys[i].name);
                conf_buf_xml_escape(b, sec->keys[i].def);
                conf_buf_printf(b, "</%s>", sec->keys[i].name);
            }
            conf_buf_printf(b, "\n       </%s> -->\n", sec->name);
            for (size_t i = 0; i < sec->nkeys; i++) {
                struct conf_buf note = {0};
                conf_buf_printf(&note, "%s/%s: ", sec->name, sec->keys[i].name);
                key_note(&note, &sec->keys[i], false);
                if (note.failed) {
                    free(note.data);
                    return CXR_ERR_NOMEM;
                }
                xml_comment(b, "  ", note.data);
                free(note.data);
            }
        }
        for (size_t e = 0; e < n; e++) {
            const void *base = conf_section_elem(conf, sec, e);
            conf_buf_printf(b, "  <%s>\n", sec->name);
            for (size_t i = 0; i < sec->nkeys; i++) {
                const struct conf_key *k = &sec->keys[i];
                char value[VALUE_MAX];
                enum cxr_status st = conf_value_format(k, base, value, sizeof value);
                if (st != CXR_OK)
                    return st;
                struct conf_buf note = {0};
                key_note(&note, k, false);
                if (note.failed) {
                    free(note.data);
                    return CXR_ERR_NOMEM;
                }
                xml_comment(b, "    ", note.data);
                free(note.data);
                conf_buf_printf(b, "    <%s>", k->name);
                conf_buf_xml_escape(b, value);
                conf_buf_printf(b, "</%s>\n", k->name);
            }
            conf_buf_printf(b, "  </%s>\n", sec->name);
        }
    }
    conf_buf_puts(b, "</cxr-triage>\n");
    return b->failed ? CXR_ERR_NOMEM : CXR_OK;
}

enum cxr_status cxr_conf_print(const struct cxr_conf *conf, void *fp)
{
    if (!conf || !fp)
        return CXR_ERR_INVALID_ARG;
    struct conf_buf b = {0};
    enum cxr_status st = print_buf(conf, &b);
    if (st == CXR_OK && (fwrite(b.data, 1, b.len, fp) != b.len || fflush(fp) != 0))
        st = CXR_ERR_IO;
    free(b.data);
    return st;
}
