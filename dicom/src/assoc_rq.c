/* assoc_rq.c — a structural check of an A-ASSOCIATE-RQ PDU (PS3.8 9.3.2,
 * 9.3.2.2, 9.3.2.3 and PS3.7 Annex D.3.3), made before DCMTK parses it.
 *
 * Why: DCMTK 3.6.7's parser leaks memory on several malformed requests
 * (dcmnet/libsrc/dulparse.cc and dulfsm.cc; none is fixed in 3.6.8/3.6.9):
 *  - parsePresentationContext() allocates the context's transfer syntax list
 *    (LST_Create) first; when a later sub-item fails (an abstract or
 *    transfer syntax over 64 bytes, a length that overruns the item),
 *    parseAssociate() free()s the context but not that list, nor the
 *    transfer syntaxes already queued on it;
 *  - parseUserInfo() returns without deleting the SOP Class Extended
 *    Negotiation sub-item it allocated when parseExtNeg() fails (a UID
 *    length beyond the item); extended negotiation items parsed before a
 *    failure are lost too (destroyUserInformationLists deletes the list,
 *    not its members); a second User Identity sub-item or a second User
 *    Information item replaces the first without freeing it;
 *  - AE_6_ExamineAssociateRequest() returns without freeing the parsed
 *    PDU's lists when a presentation context has no transfer syntax
 *    (translatePresentationContextList frees the new context, not its
 *    proposedTransferSyntax list).
 * Nothing of that is reachable from outside DCMTK (the lists are local to
 * those functions), so the SCP refuses such requests itself: this check is
 * at least as strict as every test DCMTK makes after its first allocation,
 * so a request that passes here is parsed by DCMTK without an error path.
 * Items and sub-items DCMTK skips (unknown types, asynchronous operations
 * window) are accepted when their lengths are consistent. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cxr/dicom_net.h"

/* PS3.8 Table 9-26 (A-ABORT reasons, source service-provider) */
enum {
    ABORT_UNRECOGNIZED_PDU = 1,
    ABORT_UNEXPECTED_PDU = 2,
    ABORT_UNRECOGNIZED_PARAMETER = 4,
    ABORT_INVALID_PARAMETER = 6,
};

#define RQ_FIXED_FIELDS 68 /* protocol version, reserved, called AE, calling AE, reserved */
#define UID_MAX         64 /* DCMTK's DICOM_UI_LENGTH, PS3.5 UI */

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

struct ctx {
    const uint8_t *pdu;
    char *why;
    size_t why_len;
};

static int refuse(const struct ctx *c, int reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(const struct ctx *c, int reason, const char *fmt, ...)
{
    if (c->why && c->why_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->why, c->why_len, fmt, ap);
        va_end(ap);
    }
    return reason;
}

static size_t off(const struct ctx *c, const uint8_t *p) { return (size_t)(p - c->pdu); }

/* A UID-valued (sub-)item: 1..64 bytes, as DCMTK's parseSubItem needs. */
static int check_uid_len(const struct ctx *c, const uint8_t *item, uint16_t len, const char *what)
{
    if (len == 0 || len > UID_MAX)
        return refuse(c, ABORT_INVALID_PARAMETER, "%s at offset %zu has %u bytes (1 to %d allowed)",
                      what, off(c, item), (unsigned)len, UID_MAX);
    return 0;
}

/* Presentation Context item (0x20), PS3.8 9.3.2.2: context id and three
 * reserved bytes, then exactly one Abstract Syntax sub-item (0x30) and at
 * least one Transfer Syntax sub-item (0x40). */
static int check_context(const struct ctx *c, const uint8_t *item, uint16_t len)
{
    if (len < 4)
        return refuse(c, ABORT_INVALID_PARAMETER,
                      "presentation context item at offset %zu has %u bytes (at least 4 needed)",
                      off(c, item), (unsigned)len);
    unsigned id = item[4];
    const uint8_t *p = item + 8, *end = item + 4 + len;
    int n_abstract = 0, n_transfer = 0;
    while (p < end) {
        if (end - p < 4)
            return refuse(c, ABORT_INVALID_PARAMETER,
                          "presentation context %u: sub-item header cut at offset %zu", id,
                          off(c, p));
        uint16_t sub = be16(p + 2);
        if ((size_t)(end - p - 4) < sub)
            return refuse(c, ABORT_INVALID_PARAMETER,
                          "presentation context %u: sub-item 0x%02X at offset %zu claims %u bytes, "
                          "%zu left in the item",
                          id, p[0], off(c, p), (unsigned)sub, (size_t)(end - p - 4));
        int r = 0;
        if (p[0] == 0x30) {
            if (++n_abstract > 1)
                return refuse(c, ABORT_INVALID_PARAMETER,
                              "presentation context %u has more than one abstract syntax", id);
            r = check_uid_len(c, p, sub, "abstract syntax");
        } else if (p[0] == 0x40) {
            n_transfer++;
            r = check_uid_len(c, p, sub, "transfer syntax");
        }
        if (r)
            return r;
        p += 4 + sub;
    }
    if (n_abstract == 0)
        return refuse(c, ABORT_INVALID_PARAMETER, "presentation context %u has no abstract syntax",
                      id);
    if (n_transfer == 0)
        return refuse(c, ABORT_INVALID_PARAMETER, "presentation context %u has no transfer syntax",
                      id);
    return 0;
}

/* User Identity sub-item of a request (0x58), PS3.7 D.3.3.7.1: type,
 * positive-response-requested, primary field, secondary field (only for
 * type 2, username and passcode), lengths adding up to the item's. */
static int check_user_identity(const struct ctx *c, const uint8_t *sub, uint16_t len)
{
    if (len < 6)
        return refuse(c, ABORT_INVALID_PARAMETER,
                      "user identity sub-item at offset %zu has %u bytes (at least 6 needed)",
                      off(c, sub), (unsigned)len);
    uint8_t type = sub[4];
    uint16_t primary = be16(sub + 6);
    if (primary > len - 6)
        return refuse(c, ABORT_INVALID_PARAMETER,
                      "user identity at offset %zu: primary field of %u bytes overruns the "
                      "sub-item (%u bytes)",
                      off(c, sub), (unsigned)primary, (unsigned)len);
    uint16_t secondary = be16(sub + 8 + primary);
    if ((uint32_t)6 + primary + secondary != len)
        return refuse(c, ABORT_INVALID_PARAMETER,
                      "user identity at offset %zu: fields of %u and %u bytes do not fill the "
                      "sub-item (%u bytes)",
                      off(c, sub), (unsigned)primary, (unsigned)secondary, (unsigned)len);
    if (secondary && type != 2)
        return refuse(c, ABORT_INVALID_PARAMETER,
                      "user identity at offset %zu: type %u with a secondary field (only type 2 "
                      "has one)",
                      off(c, sub), (unsigned)type);
    return 0;
}

/* User Information item (0x50), PS3.8 9.3.2.3 and PS3.7 D.3.3. */
static int check_user_info(const struct ctx *c, const uint8_t *item, uint16_t len)
{
    const uint8_t *p = item + 4, *end = item + 4 + len;
    int n_max = 0, n_identity = 0;
    while (p < end) {
        if (end - p < 4)
            return refuse(c, ABORT_INVALID_PARAMETER,
                          "user information: sub-item header cut at offset %zu", off(c, p));
        uint8_t type = p[0];
        uint16_t sub = be16(p + 2);
        if ((size_t)(end - p - 4) < sub)
            return refuse(c, ABORT_INVALID_PARAMETER,
                          "user information: sub-item 0x%02X at offset %zu claims %u bytes, %zu "
                          "left in the item",
                          type, off(c, p), (unsigned)sub, (size_t)(end - p - 4));
        int r = 0;
        switch (type) {
        case 0x51: /* Maximum Length */
            if (++n_max > 1)
                return refuse(c, ABORT_INVALID_PARAMETER, "more than one maximum length sub-item");
            if (sub != 4)
                r = refuse(c, ABORT_INVALID_PARAMETER,
                           "maximum length sub-item at offset %zu has %u bytes (4 needed)",
                           off(c, p), (unsigned)sub);
            break;
        case 0x52: r = check_uid_len(c, p, sub, "implementation class UID"); break;
        case 0x55: /* Implementation Version Name: DCMTK reads up to 64, keeps 16 */
            r = check_uid_len(c, p, sub, "implementation version name");
            break;
        case 0x54: { /* SCP/SCU Role Selection: UID length, UID, SCU role, SCP role */
            uint16_t uid = sub >= 2 ? be16(p + 4) : 0;
            if (sub < 4 || uid == 0 || uid > UID_MAX || (uint32_t)uid + 4 != sub)
                r = refuse(c, ABORT_INVALID_PARAMETER,
                           "role selection sub-item at offset %zu: %u bytes with a UID of %u "
                           "(a UID of 1 to %d bytes and two role bytes needed)",
                           off(c, p), (unsigned)sub, (unsigned)uid, UID_MAX);
            break;
        }
        case 0x56: { /* SOP Class Extended Negotiation: UID length, UID, application info */
            uint16_t uid = sub >= 2 ? be16(p + 4) : 0;
            if (sub < 2 || uid == 0 || uid > UID_MAX || uid > sub - 2)
                r = refuse(c, ABORT_INVALID_PARAMETER,
                           "extended negotiation sub-item at offset %zu: %u bytes with a UID of "
                           "%u (1 to %d bytes, within the sub-item)",
                           off(c, p), (unsigned)sub, (unsigned)uid, UID_MAX);
            break;
        }
        case 0x58:
            if (++n_identity > 1)
                return refuse(c, ABORT_INVALID_PARAMETER, "more than one user identity sub-item");
            r = check_user_identity(c, p, sub);
            break;
        case 0x59:
            return refuse(c, ABORT_UNRECOGNIZED_PARAMETER,
                          "user identity answer sub-item (0x59) in a request, offset %zu",
                          off(c, p));
        default:
            break; /* asynchronous operations window, common extended negotiation,
                      unknown: DCMTK skips them */
        }
        if (r)
            return r;
        p += 4 + sub;
    }
    return 0;
}

int cxr_dicom_assoc_rq_check(const uint8_t *pdu, size_t len, char *why, size_t why_len)
{
    struct ctx c = {pdu, why, why_len};
    if (why && why_len)
        why[0] = '\0';
    if (!pdu || len < 6)
        return refuse(&c, ABORT_UNRECOGNIZED_PDU, "%zu bytes: shorter than a PDU header", len);
    if (pdu[0] != 0x01)
        return refuse(
            &c, pdu[0] >= 0x02 && pdu[0] <= 0x07 ? ABORT_UNEXPECTED_PDU : ABORT_UNRECOGNIZED_PDU,
            "PDU type 0x%02X where an A-ASSOCIATE-RQ (0x01) was expected", pdu[0]);
    uint32_t pdu_len = be32(pdu + 2);
    if ((uint64_t)pdu_len != (uint64_t)len - 6)
        return refuse(&c, ABORT_INVALID_PARAMETER, "PDU length %u, but %zu bytes follow the header",
                      (unsigned)pdu_len, len - 6);
    if (pdu_len < RQ_FIXED_FIELDS)
        return refuse(&c, ABORT_INVALID_PARAMETER,
                      "PDU of %u bytes: shorter than the fixed fields (%d)", (unsigned)pdu_len,
                      RQ_FIXED_FIELDS);
    const uint8_t *p = pdu + 6 + RQ_FIXED_FIELDS, *end = pdu + len;
    int n_context_name = 0, n_user_info = 0;
    while (p < end) {
        if (end - p < 4)
            return refuse(&c, ABORT_INVALID_PARAMETER, "item header cut at offset %zu", off(&c, p));
        uint8_t type = p[0];
        uint16_t item = be16(p + 2);
        if ((size_t)(end - p - 4) < item)
            return refuse(&c, ABORT_INVALID_PARAMETER,
                          "item 0x%02X at offset %zu claims %u bytes, %zu left in the PDU", type,
                          off(&c, p), (unsigned)item, (size_t)(end - p - 4));
        int r = 0;
        switch (type) {
        case 0x10:
            if (++n_context_name > 1)
                return refuse(&c, ABORT_INVALID_PARAMETER,
                              "more than one application context item");
            r = check_uid_len(&c, p, item, "application context name");
            break;
        case 0x20: r = check_context(&c, p, item); break;
        case 0x21:
            return refuse(&c, ABORT_UNRECOGNIZED_PARAMETER,
                          "presentation context answer item (0x21) in a request, offset %zu",
                          off(&c, p));
        case 0x50:
            if (++n_user_info > 1)
                return refuse(&c, ABORT_INVALID_PARAMETER, "more than one user information item");
            r = check_user_info(&c, p, item);
            break;
        default: break; /* DCMTK skips unknown items */
        }
        if (r)
            return r;
        p += 4 + item;
    }
    return 0;
}
