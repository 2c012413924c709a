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
 * dataset, within a budget that follows from the geometry it declares
 * (inflate_dataset: a small deflated file must not become gigabytes).
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
            enum cxr_status st = element(pos, end, e, depth);
            if (st != CXR_OK)
                return st;
        }
        if (item_undefined)
            return fail("item without Item Delimitation (truncated)");
        return CXR_OK;
    }

    /* One data element (not a delimiter) at `pos` of a dataset ending at
     * `end`, nested `depth` deep: its header, and its value or items;
     * advances `pos` past it. */
    enum cxr_status element(size_t &pos, size_t end, enc e, int depth)
    {
        uint16_t g = u16(pos, e), el = u16(pos + 2, e);
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
                st = sequence(pos, end, end, is_un ? enc{false, false} : e, depth, g, el, false);
            else
                return fail("element (%04X,%04X) has undefined length but is not a sequence", g,
                            el);
            return st;
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
            return CXR_OK;
        } else if (!pixel_data && (is_un || implicit_elem) && len >= 8 && looks_like_item(pos, e)) {
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

/* The geometry a data set declares at its top level, read from the first
 * bytes of an inflated stream: what its Pixel Data may hold. */
struct geometry {
    uint64_t rows = 0, cols = 0, samples = 1, bits = 0, frames = 1;
    size_t pixel_at = 0; /* offset of the Pixel Data element's header */
};

/* Walks the top-level elements of p[0..n) (Explicit VR Little Endian, the
 * encoding inside a deflated stream) up to the Pixel Data, reading Rows,
 * Columns, Samples per Pixel, Bits Allocated and Number of Frames. False
 * when the Pixel Data does not begin inside p[0..n) (the elements before it
 * are larger than n, or malformed: the full scan says which). */
bool find_pixel_data(const uint8_t *p, size_t n, geometry &g)
{
    char scratch[CXR_ERRLEN];
    scanner s(p, n, scratch);
    const enc e{true, false};
    size_t pos = 0;
    while (n - pos >= 12) {
        uint16_t grp = s.u16(pos, e), el = s.u16(pos + 2, e);
        if (grp == 0x7FE0 && el == 0x0010) {
            g.pixel_at = pos;
            return true;
        }
        if (grp == 0xFFFE)
            return false;
        size_t q = pos;
        if (s.element(q, n, e, 0) != CXR_OK)
            return false;
        uint32_t len = static_cast<uint32_t>(q - pos) - 8;
        if (grp == 0x0028 && len == 2 && p[pos + 4] == 'U' && p[pos + 5] == 'S') {
            uint64_t v = s.u16(pos + 8, e);
            switch (el) {
            case 0x0002: g.samples = v; break;
            case 0x0010: g.rows = v; break;
            case 0x0011: g.cols = v; break;
            case 0x0100: g.bits = v; break;
            default: break;
            }
        } else if (grp == 0x0028 && el == 0x0008 && len > 0 && len < 16) {
            char text[16];
            std::memcpy(text, p + pos + 8, len);
            text[len] = '\0';
            long f = std::strtol(text, nullptr, 10);
            g.frames = f > 1 ? static_cast<uint64_t>(f) : 1;
        }
        pos = q;
    }
    return false;
}

/* Inflates a Deflated Explicit VR Little Endian dataset (raw deflate, PS3.5
 * A.5) through DCMTK's own zlib filter, within a budget that grows only with
 * what the data set declares: CXR_DICOM_INFLATE_ALLOWANCE bytes until its
 * Pixel Data begins; then the bytes Rows x Columns x Samples per Pixel x
 * Bits Allocated x Number of Frames need (at most max_pixel_bytes), plus the
 * allowance again for what follows. Beyond the budget the stream is refused
 * (CXR_ERR_LIMIT) having held no more than the budget. */
enum cxr_status inflate_dataset(const uint8_t *p, size_t n, uint64_t max_pixel_bytes,
                                std::vector<uint8_t> &out, char *err)
{
    DcmInputBufferStream in;
    in.setBuffer(p, static_cast<offile_off_t>(n));
    in.setEos();
    OFCondition c = in.installCompressionFilter(ESC_zlib);
    if (c.bad())
        return cxr_dicom_cond(err, CXR_ERR_DICOM_TS, c, "Deflated transfer syntax");
    out.clear();
    const uint64_t allowance = CXR_DICOM_INFLATE_ALLOWANCE;
    uint64_t cap = allowance;
    bool geometry_known = false;
    geometry g;
    uint64_t pixel_bytes = 0, declared = 0;
    bool too_big = false;
    uint8_t chunk[65536];
    while (!in.eos()) {
        offile_off_t k = in.read(chunk, sizeof chunk);
        if (in.status().bad())
            return cxr_dicom_cond(err, CXR_ERR_DICOM_PARSE, in.status(), "inflating the dataset");
        if (k <= 0)
            break;
        if (out.size() + static_cast<size_t>(k) > cap && !geometry_known) {
            /* the budget from here on follows from what the data set declares */
            geometry_known = true;
            out.insert(out.end(), chunk, chunk + k);
            if (!find_pixel_data(out.data(), out.size(), g))
                return cxr_seterr(err, CXR_ERR_LIMIT,
                                  "the deflated data set expands to more than %llu MiB before "
                                  "its Pixel Data: refused as a likely decompression bomb",
                                  static_cast<unsigned long long>(allowance >> 20));
            uint64_t bytes_per_sample = (g.bits + 7) / 8;
            declared = g.rows * g.cols;
            for (uint64_t f : {g.samples, bytes_per_sample, g.frames})
                declared = f && declared > UINT64_MAX / 2 / f ? UINT64_MAX / 2 : declared * f;
            pixel_bytes = declared < max_pixel_bytes ? declared : max_pixel_bytes;
            cap = g.pixel_at + 12 + pixel_bytes + 1 + allowance;
            if ((too_big = out.size() > cap))
                break;
            out.reserve(static_cast<size_t>(cap));
            continue;
        }
        if ((too_big = out.size() + static_cast<size_t>(k) > cap))
            break;
        out.insert(out.end(), chunk, chunk + k);
    }
    if (too_big) {
        out.clear();
        out.shrink_to_fit();
        char gate[160] = "";
        if (pixel_bytes < declared)
            std::snprintf(gate, sizeof gate,
                          ", more than the gate's image size limits allow (%llu bytes)",
                          static_cast<unsigned long long>(pixel_bytes));
        return cxr_seterr(
            err, CXR_ERR_LIMIT,
            "the deflated data set expands to more than %.1f MiB, although its %llu x %llu pixels "
            "(%llu sample(s) of %llu bits, %llu frame(s)) need %llu bytes%s: refused as a likely "
            "decompression bomb",
            static_cast<double>(cap) / (1 << 20), static_cast<unsigned long long>(g.rows),
            static_cast<unsigned long long>(g.cols), static_cast<unsigned long long>(g.samples),
            static_cast<unsigned long long>(g.bits), static_cast<unsigned long long>(g.frames),
            static_cast<unsigned long long>(declared), gate);
    }
    return CXR_OK;
}

} // namespace

enum cxr_status cxr_dicom_scan(const uint8_t *p, size_t n, uint64_t max_pixel_bytes,
                               struct cxr_dicom_scan_result *r, char *err)
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
        enum cxr_status st = inflate_dataset(p + pos, n - pos, max_pixel_bytes, inflated, err);
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
