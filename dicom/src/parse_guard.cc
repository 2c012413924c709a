/* parse_guard.cc — a bounded structural pre-scan of DICOM bytes, run before
 * DCMTK parses them.
 *
 * Why: DCMTK 3.6.7 parses sequences recursively with no depth limit (a file of
 * 180 000 nested sequences overflows the stack and kills the process), and it
 * allocates each element's declared length before noticing the file is
 * shorter. This scanner walks the same encoding (PS3.5 §7: tags, VRs, value
 * lengths, items, delimiters, encapsulated fragments) iteratively over the
 * bytes, with fixed limits: sequence depth, element count, and every defined
 * length must fit in what remains of its container. It allocates nothing
 * sized by the input except, for the Deflated transfer syntax, the inflated
 * dataset (capped at CXR_DICOM_MAX_INPUT_BYTES).
 *
 * It also settles the dataset's encoding (from the meta header, or detected
 * the way DCMTK detects it) so that DCMTK is asked to read exactly what was
 * scanned.
 */
#include "dicom_internal.h"

#include <cstring>
#include <vector>

#include <dcmtk/dcmdata/dcistrmb.h>

namespace
{

struct enc {
    bool explicit_vr;
    bool big_endian;
};

/* The VR DCMTK makes of two bytes in an explicit-VR header (DcmVR decides
 * the length field size too: unknown upper-case names are "future" VRs with
 * a 4-byte length, anything else an illegal VR with a 2-byte length). */
DcmVR vr_of(const uint8_t *v)
{
    char name[3] = {static_cast<char>(v[0]), static_cast<char>(v[1]), '\0'};
    return DcmVR(name);
}

/* Whether two bytes name a standard VR (DCMTK's DcmItem::foundVR). */
bool found_vr(const uint8_t *v)
{
    if (!((v[0] >= 'A' && v[0] <= 'Z') || (v[0] >= 'a' && v[0] <= 'z')) ||
        !((v[1] >= 'A' && v[1] <= 'Z') || (v[1] >= 'a' && v[1] <= 'z')))
        return false;
    char name[3] = {static_cast<char>(v[0]), static_cast<char>(v[1]), '\0'};
    return DcmVR(name).isStandard();
}

class scanner
{
  public:
    scanner(const uint8_t *p, size_t n, char *err) : p_(p), n_(n), err_(err) {}

    /* Scans the dataset in [pos, end) at nesting `depth`. With `item_undefined`
     * it must end with an Item Delimitation Item (consumed). */
    enum cxr_status dataset(size_t &pos, size_t end, enc e, int depth, bool item_undefined)
    {
        while (pos < end) {
            if (end - pos < 8) {
                if (depth == 0 && !item_undefined)
                    return CXR_OK; /* a few trailing bytes after the last element: tolerated */
                return fail("item ends inside an element header at byte %zu", pos);
            }
            uint16_t g = u16(pos, e), el = u16(pos + 2, e);
            if (g == 0xFFFE) {
                if (el == 0xE00D && item_undefined) {
                    pos += 8;
                    return CXR_OK;
                }
                return fail("unexpected delimiter (FFFE,%04X) at byte %zu", el, pos);
            }
            if (++count_ > CXR_DICOM_MAX_ELEMENTS)
                return fail("more than %u elements: refused", CXR_DICOM_MAX_ELEMENTS);

            uint32_t len;
            size_t hdr;
            bool is_sq = false, is_un = false, implicit_elem = !e.explicit_vr;
            if (e.explicit_vr) {
                DcmVR vr = vr_of(p_ + pos + 4);
                if (!vr.usesExtendedLengthEncoding()) {
                    len = u16(pos + 6, e);
                    hdr = 8;
                } else {
                    if (end - pos < 12)
                        return fail("element (%04X,%04X) header cut off at byte %zu", g, el, pos);
                    len = u32(pos + 8, e);
                    hdr = 12;
                    is_sq = vr.getEVR() == EVR_SQ;
                    is_un = vr.getEVR() == EVR_UN || vr.getEVR() == EVR_UNKNOWN;
                }
            } else {
                len = u32(pos + 4, e);
                hdr = 8;
                is_sq = DcmTag(g, el).getEVR() == EVR_SQ;
            }
            pos += hdr;

            const bool pixel_data = g == 0x7FE0 && el == 0x0010;
            if (len == 0xFFFFFFFFu) {
                enum cxr_status st;
                if (pixel_data)
                    st = fragments(pos, end, e, g, el);
                else if (is_sq || is_un || implicit_elem)
                    /* UN of undefined length holds Implicit VR Little Endian (PS3.5 6.2.2) */
                    st =
                        sequence(pos, end, end, is_un ? enc{false, false} : e, depth, g, el, false);
                else
                    return fail("element (%04X,%04X) has undefined length but is not a sequence", g,
                                el);
                if (st != CXR_OK)
                    return st;
                continue;
            }
            if (len > end - pos)
                return fail("element (%04X,%04X) claims %u bytes but only %zu remain "
                            "(truncated or corrupt)",
                            g, el, len, end - pos);
            if (is_sq) {
                /* DCMTK lets the last item run past the sequence's own length as
                 * long as the container holds it, and goes on after that item */
                size_t q = pos;
                enum cxr_status st = sequence(q, pos + len, end, e, depth, g, el, true);
                if (st != CXR_OK)
                    return st;
                pos = q > pos + len ? q : pos + len;
                continue;
            } else if (!pixel_data && (is_un || implicit_elem) && len >= 8 &&
                       looks_like_item(pos, e)) {
                /* DCMTK may read this as a sequence (private dictionary entries):
                 * count its nesting too; if it does not scan as one, it is opaque. */
                size_t q = pos;
                unsigned long saved = count_;
                if (sequence(q, pos + len, pos + len, e, depth, g, el, true) != CXR_OK) {
                    count_ = saved;
                    if (depth_exceeded_)
                        return CXR_ERR_DICOM_PARSE;
                }
            }
            pos += len;
        }
        if (item_undefined)
            return fail("item without Item Delimitation (truncated)");
        return CXR_OK;
    }

    /* Encoded dataset begins at `pos`: what DCMTK would detect (DcmItem::checkTransferSyntax). */
    enc detect(size_t pos) const
    {
        if (n_ - pos < 6)
            return {true, false};
        uint16_t t1 = static_cast<uint16_t>(p_[pos] | p_[pos + 1] << 8);
        uint16_t t2 = static_cast<uint16_t>(p_[pos + 2] | p_[pos + 3] << 8);
        DcmTag little(t1, t2);
        DcmTag big(swap(t1), swap(t2));
        bool vr = found_vr(p_ + pos + 4);
        bool le_bad = little.error().bad(), be_bad = big.error().bad();
        if (le_bad && be_bad)
            return {vr, false};
        if (le_bad)
            return {vr, true};
        if (be_bad)
            return {vr, false};
        /* both known: the smaller group number is the plausible one */
        return {vr, little.getGTag() > big.getGTag()};
    }

    size_t count() const { return count_; }

    enum cxr_status fail(const char *fmt, ...) __attribute__((format(printf, 2, 3)))
    {
        if (err_) {
            va_list ap;
            va_start(ap, fmt);
            std::vsnprintf(err_, CXR_ERRLEN, fmt, ap);
            va_end(ap);
        }
        return CXR_ERR_DICOM_PARSE;
    }

    uint16_t u16(size_t at, enc e) const
    {
        return e.big_endian ? static_cast<uint16_t>(p_[at] << 8 | p_[at + 1])
                            : static_cast<uint16_t>(p_[at] | p_[at + 1] << 8);
    }
    uint32_t u32(size_t at, enc e) const
    {
        const uint8_t *q = p_ + at;
        return e.big_endian
                   ? (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3]
                   : (uint32_t)q[3] << 24 | (uint32_t)q[2] << 16 | (uint32_t)q[1] << 8 | q[0];
    }

  private:
    static uint16_t swap(uint16_t v) { return static_cast<uint16_t>(v << 8 | v >> 8); }

    bool looks_like_item(size_t at, enc e) const
    {
        return u16(at, e) == 0xFFFE && u16(at + 2, e) == 0xE000;
    }

    /* Items of a sequence in [pos, end); `defined`: the sequence ends at `end`,
     * else at a Sequence Delimitation Item. An item may reach up to `outer`
     * (the container's end), after which the sequence is over. */
    enum cxr_status sequence(size_t &pos, size_t end, size_t outer, enc e, int depth, uint16_t g,
                             uint16_t el, bool defined)
    {
        if (depth + 1 > CXR_DICOM_MAX_SEQ_DEPTH) {
            depth_exceeded_ = true;
            return fail("sequences nested deeper than %d levels (at element (%04X,%04X)): refused",
                        CXR_DICOM_MAX_SEQ_DEPTH, g, el);
        }
        while (pos < end) {
            if (end - pos < 8)
                return fail("sequence (%04X,%04X) cut off at byte %zu", g, el, pos);
            uint16_t ig = u16(pos, e), ie = u16(pos + 2, e);
            uint32_t ilen = u32(pos + 4, e);
            pos += 8;
            if (ig == 0xFFFE && ie == 0xE0DD) {
                if (!defined)
                    return CXR_OK;
                continue; /* stray delimiter inside a defined-length sequence: harmless */
            }
            if (ig != 0xFFFE || ie != 0xE000)
                return fail("sequence (%04X,%04X) holds (%04X,%04X) where an item belongs", g, el,
                            ig, ie);
            if (++count_ > CXR_DICOM_MAX_ELEMENTS)
                return fail("more than %u elements: refused", CXR_DICOM_MAX_ELEMENTS);
            enum cxr_status st;
            if (ilen == 0xFFFFFFFFu) {
                st = dataset(pos, outer, e, depth + 1, true);
                if (st == CXR_OK && pos > end)
                    return CXR_OK;
            } else {
                if (ilen > outer - pos)
                    return fail("item in sequence (%04X,%04X) claims %u bytes but only %zu remain",
                                g, el, ilen, outer - pos);
                size_t q = pos;
                st = dataset(q, pos + ilen, e, depth + 1, false);
                pos += ilen;
                if (st == CXR_OK && pos > end)
                    return CXR_OK; /* item overran the sequence length (tolerated, as DCMTK) */
            }
            if (st != CXR_OK)
                return st;
        }
        if (!defined)
            return fail("sequence (%04X,%04X) has no Sequence Delimitation (truncated)", g, el);
        return CXR_OK;
    }

    /* Encapsulated pixel data: items of defined length up to the delimiter. */
    enum cxr_status fragments(size_t &pos, size_t end, enc e, uint16_t g, uint16_t el)
    {
        while (end - pos >= 8) {
            uint16_t ig = u16(pos, e), ie = u16(pos + 2, e);
            uint32_t ilen = u32(pos + 4, e);
            pos += 8;
            if (ig == 0xFFFE && ie == 0xE0DD)
                return CXR_OK;
            if (ig != 0xFFFE || ie != 0xE000)
                return fail("encapsulated (%04X,%04X) holds (%04X,%04X) where a fragment belongs",
                            g, el, ig, ie);
            if (ilen == 0xFFFFFFFFu || ilen > end - pos)
                return fail("pixel fragment claims %u bytes but only %zu remain (truncated)", ilen,
                            end - pos);
            if (++count_ > CXR_DICOM_MAX_ELEMENTS)
                return fail("more than %u pixel fragments: refused", CXR_DICOM_MAX_ELEMENTS);
            pos += ilen;
        }
        return fail("encapsulated Pixel Data has no Sequence Delimitation (truncated)");
    }

    const uint8_t *p_;
    size_t n_;
    char *err_;
    unsigned long count_ = 0;
    bool depth_exceeded_ = false;
};

/* Inflates a Deflated Explicit VR Little Endian dataset (raw deflate, PS3.5
 * A.5) through DCMTK's own zlib filter, capped. */
enum cxr_status inflate_dataset(const uint8_t *p, size_t n, std::vector<uint8_t> &out, char *err)
{
    DcmInputBufferStream in;
    in.setBuffer(p, static_cast<offile_off_t>(n));
    in.setEos();
    OFCondition c = in.installCompressionFilter(ESC_zlib);
    if (c.bad())
        return cxr_dicom_cond(err, CXR_ERR_DICOM_TS, c, "Deflated transfer syntax");
    out.clear();
    uint8_t chunk[65536];
    while (!in.eos()) {
        offile_off_t k = in.read(chunk, sizeof chunk);
        if (in.status().bad())
            return cxr_dicom_cond(err, CXR_ERR_DICOM_PARSE, in.status(), "inflating the dataset");
        if (k <= 0)
            break;
        if (out.size() + static_cast<size_t>(k) > CXR_DICOM_MAX_INPUT_BYTES)
            return cxr_seterr(err, CXR_ERR_LIMIT,
                              "deflated dataset inflates beyond %zu bytes: refused",
                              CXR_DICOM_MAX_INPUT_BYTES);
        out.insert(out.end(), chunk, chunk + k);
    }
    return CXR_OK;
}

} // namespace

enum cxr_status cxr_dicom_scan(const uint8_t *p, size_t n, struct cxr_dicom_scan_result *r,
                               char *err)
{
    *r = cxr_dicom_scan_result{};
    r->xfer = EXS_Unknown;
    if (n > CXR_DICOM_MAX_INPUT_BYTES)
        return cxr_seterr(err, CXR_ERR_LIMIT, "%zu bytes: larger than the %zu-byte limit", n,
                          CXR_DICOM_MAX_INPUT_BYTES);
    if (n < 8)
        return cxr_seterr(err, CXR_ERR_DICOM_PARSE, "%zu bytes: too short to be DICOM", n);
    scanner s(p, n, err);
    size_t pos = 0;
    if (n >= 132 && std::memcmp(p + 128, "DICM", 4) == 0) {
        r->has_preamble = true;
        pos = 132;
    }

    /* File Meta Information (group 0002): Explicit VR Little Endian (PS3.10 7.1). */
    const enc meta_enc{true, false};
    while (n - pos >= 8 && s.u16(pos, meta_enc) == 0x0002) {
        uint16_t el = s.u16(pos + 2, meta_enc);
        size_t hdr;
        uint32_t len;
        bool explicit_meta = found_vr(p + pos + 4);
        if (!explicit_meta) { /* some writers put the meta header in implicit VR */
            len = s.u32(pos + 4, meta_enc);
            hdr = 8;
        } else if (!vr_of(p + pos + 4).usesExtendedLengthEncoding()) {
            len = s.u16(pos + 6, meta_enc);
            hdr = 8;
        } else {
            if (n - pos < 12)
                return s.fail("file meta header cut off");
            len = s.u32(pos + 8, meta_enc);
            hdr = 12;
        }
        if (len == 0xFFFFFFFFu || len > n - pos - hdr)
            return s.fail("file meta element (0002,%04X) claims %u bytes, %zu remain", el, len,
                          n - pos - hdr);
        if (el == 0x0010) {
            size_t k = len < sizeof r->ts_uid - 1 ? len : sizeof r->ts_uid - 1;
            std::memcpy(r->ts_uid, p + pos + hdr, k);
            r->ts_uid[k] = '\0';
            while (k > 0 && (r->ts_uid[k - 1] == '\0' || r->ts_uid[k - 1] == ' '))
                r->ts_uid[--k] = '\0';
        }
        r->has_meta = true;
        pos += hdr + len;
    }
    r->dataset_offset = pos;

    /* The dataset's encoding: what the meta header says, else detected. */
    enc e{true, false};
    E_TransferSyntax x = r->ts_uid[0] ? DcmXfer(r->ts_uid).getXfer() : EXS_Unknown;
    bool deflated = false;
    switch (x) {
    case EXS_LittleEndianImplicit: e = {false, false}; break;
    case EXS_BigEndianExplicit: e = {true, true}; break;
    case EXS_DeflatedLittleEndianExplicit: deflated = true; break;
    case EXS_Unknown:
    case EXS_BigEndianImplicit:
        /* no meta header, or a syntax DCMTK 3.6.7 does not know (HTJ2K, ...):
         * DCMTK detects the encoding from the first element; so do we */
        e = s.detect(pos);
        x = e.explicit_vr ? (e.big_endian ? EXS_BigEndianExplicit : EXS_LittleEndianExplicit)
                          : (e.big_endian ? EXS_BigEndianImplicit : EXS_LittleEndianImplicit);
        break;
    default: /* every encapsulated syntax is Explicit VR Little Endian */ break;
    }
    r->xfer = x;

    if (deflated) {
        std::vector<uint8_t> inflated;
        enum cxr_status st = inflate_dataset(p + pos, n - pos, inflated, err);
        if (st != CXR_OK)
            return st;
        scanner si(inflated.data(), inflated.size(), err);
        size_t q = 0;
        st = si.dataset(q, inflated.size(), e, 0, false);
        r->elements = si.count();
        return st;
    }
    enum cxr_status st = s.dataset(pos, n, e, 0, false);
    r->elements = s.count();
    return st;
}
