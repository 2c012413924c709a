/* j2k_codec.cc — JPEG 2000 decoding through OpenJPEG 2.5 (see j2k_codec.h).
 * Decoding reads from memory (opj_stream with our own read / skip / seek
 * callbacks), never from a temporary file. PS3.5 A.4.4 (JPEG 2000), A.4.1
 * (fragments and Basic Offset Table). */
#include "dicom_internal.h"
#include "j2k_codec.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <openjpeg.h>

/* ------------------------------------------------------------------ OpenJPEG */

namespace
{

struct mem_source {
    const uint8_t *p;
    size_t len, pos;
};

OPJ_SIZE_T mem_read(void *buf, OPJ_SIZE_T n, void *user)
{
    auto *m = static_cast<mem_source *>(user);
    if (m->pos >= m->len)
        return static_cast<OPJ_SIZE_T>(-1); /* end of stream */
    size_t k = m->len - m->pos < n ? m->len - m->pos : n;
    std::memcpy(buf, m->p + m->pos, k);
    m->pos += k;
    return k;
}

OPJ_OFF_T mem_skip(OPJ_OFF_T n, void *user)
{
    auto *m = static_cast<mem_source *>(user);
    if (n < 0) {
        size_t back = static_cast<size_t>(-n);
        if (back > m->pos)
            back = m->pos;
        m->pos -= back;
        return -static_cast<OPJ_OFF_T>(back);
    }
    size_t fwd = static_cast<size_t>(n);
    if (fwd > m->len - m->pos)
        fwd = m->len - m->pos;
    m->pos += fwd;
    return static_cast<OPJ_OFF_T>(fwd);
}

OPJ_BOOL mem_seek(OPJ_OFF_T n, void *user)
{
    auto *m = static_cast<mem_source *>(user);
    if (n < 0 || static_cast<uint64_t>(n) > m->len)
        return OPJ_FALSE;
    m->pos = static_cast<size_t>(n);
    return OPJ_TRUE;
}

/* OpenJPEG reports errors through a callback; keep the first one. */
struct opj_messages {
    char first_error[256];
};

void on_opj_error(const char *msg, void *user)
{
    auto *m = static_cast<opj_messages *>(user);
    if (m->first_error[0] == '\0') {
        cxr_dicom_copy_str(m->first_error, sizeof m->first_error, msg);
        size_t n = std::strlen(m->first_error);
        while (n > 0 && (m->first_error[n - 1] == '\n' || m->first_error[n - 1] == ' '))
            m->first_error[--n] = '\0';
    }
}

void on_opj_quiet(const char *, void *) {}

const uint8_t k_jp2_signature[12] = {0, 0, 0, 0x0C, 'j', 'P', ' ', ' ', 0x0D, 0x0A, 0x87, 0x0A};

} // namespace

bool cxr_j2k_have_htj2k(void)
{
    int major = 0, minor = 0;
    if (std::sscanf(opj_version(), "%d.%d", &major, &minor) != 2)
        return false;
    return major > 2 || (major == 2 && minor >= 5);
}

enum cxr_status cxr_j2k_decode(const uint8_t *data, size_t len, const struct cxr_j2k_target *t,
                               void *out, size_t out_size, struct cxr_j2k_decoded *got, char *err)
{
    enum cxr_status st = CXR_OK;
    opj_stream_t *stream = nullptr;
    opj_codec_t *codec = nullptr;
    opj_image_t *image = nullptr;
    opj_dparameters_t params;
    opj_messages msgs{};
    mem_source src{data, len, 0};
    OPJ_CODEC_FORMAT fmt;
    uint32_t prec = 0;
    bool sgnd = false;
    size_t bytes_per_sample = t->bits_allocated == 8 ? 1 : 2;
    uint64_t need = static_cast<uint64_t>(t->rows) * t->columns * t->samples * bytes_per_sample;

    if (t->bits_allocated != 8 && t->bits_allocated != 16)
        return cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                          "JPEG 2000: BitsAllocated %u not supported (8 or 16)", t->bits_allocated);
    if (need > out_size)
        return cxr_seterr(err, CXR_ERR_LIMIT,
                          "JPEG 2000: output buffer of %zu bytes, frame needs %llu", out_size,
                          static_cast<unsigned long long>(need));
    if (len >= 12 && std::memcmp(data, k_jp2_signature, 12) == 0)
        fmt = OPJ_CODEC_JP2;
    else if (len >= 4 && data[0] == 0xFF && data[1] == 0x4F && data[2] == 0xFF && data[3] == 0x51)
        fmt = OPJ_CODEC_J2K;
    else
        return cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                          "JPEG 2000: the frame does not start with a codestream (SOC/SIZ "
                          "markers) or a JP2 signature");

    stream = opj_stream_create(OPJ_J2K_STREAM_CHUNK_SIZE, OPJ_TRUE);
    codec = opj_create_decompress(fmt);
    if (!stream || !codec) {
        st = cxr_seterr(err, CXR_ERR_NOMEM, "JPEG 2000: OpenJPEG could not allocate a decoder");
        goto fail;
    }
    opj_stream_set_user_data(stream, &src, nullptr);
    opj_stream_set_user_data_length(stream, len);
    opj_stream_set_read_function(stream, mem_read);
    opj_stream_set_skip_function(stream, mem_skip);
    opj_stream_set_seek_function(stream, mem_seek);
    opj_set_error_handler(codec, on_opj_error, &msgs);
    opj_set_warning_handler(codec, on_opj_quiet, nullptr);
    opj_set_info_handler(codec, on_opj_quiet, nullptr);
    opj_set_default_decoder_parameters(&params);
    if (!opj_setup_decoder(codec, &params)) {
        st = cxr_seterr(err, CXR_ERR_DICOM_DECODE, "JPEG 2000 decoder setup failed: %s",
                        msgs.first_error[0] ? msgs.first_error : "no detail from OpenJPEG");
        goto fail;
    }
    /* Code blocks decode in parallel: decoding dominates the time of a
     * JPEG 2000 image (a 1955x1841 radiograph: ~110 ms on one core). Up to
     * 4 threads, fewer on smaller machines; OPJ_NUM_THREADS, OpenJPEG's own
     * variable, decides when it is set. Without thread support in the
     * library the call fails and decoding stays on this thread. */
    if (!std::getenv("OPJ_NUM_THREADS")) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        (void)opj_codec_set_threads(codec, ncpu < 1 ? 1 : ncpu > 4 ? 4 : static_cast<int>(ncpu));
    }
    if (!opj_read_header(stream, codec, &image) || !image) {
        st = cxr_seterr(err, CXR_ERR_DICOM_DECODE, "JPEG 2000 header unreadable: %s",
                        msgs.first_error[0] ? msgs.first_error : "no detail from OpenJPEG");
        goto fail;
    }

    /* Check the codestream against the dataset before decoding allocates. */
    if (image->numcomps != t->samples) {
        st = cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                        "JPEG 2000 codestream has %u components, SamplesPerPixel is %u",
                        image->numcomps, t->samples);
        goto fail;
    }
    prec = image->comps[0].prec;
    sgnd = image->comps[0].sgnd != 0;
    for (uint32_t c = 0; c < image->numcomps; c++) {
        const opj_image_comp_t &k = image->comps[c];
        if (k.dx != 1 || k.dy != 1) {
            st = cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                            "JPEG 2000 component %u is sub-sampled (%ux%u): not supported", c, k.dx,
                            k.dy);
            goto fail;
        }
        if (k.w != t->columns || k.h != t->rows) {
            st = cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                            "JPEG 2000 codestream is %ux%u, the dataset says %ux%u "
                            "(Columns x Rows)",
                            k.w, k.h, t->columns, t->rows);
            goto fail;
        }
        if (k.prec != prec || (k.sgnd != 0) != sgnd) {
            st = cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                            "JPEG 2000 components differ in precision or signedness");
            goto fail;
        }
    }
    if (prec < 1 || prec > 16 || prec > t->bits_allocated) {
        st = cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                        "JPEG 2000 precision %u bits does not fit BitsAllocated %u", prec,
                        t->bits_allocated);
        goto fail;
    }

    if (!opj_decode(codec, stream, image) || !opj_end_decompress(codec, stream)) {
        st = cxr_seterr(err, CXR_ERR_DICOM_DECODE, "JPEG 2000 decoding failed: %s",
                        msgs.first_error[0] ? msgs.first_error : "no detail from OpenJPEG");
        goto fail;
    }
    for (uint32_t c = 0; c < image->numcomps; c++)
        if (!image->comps[c].data) {
            st = cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                            "JPEG 2000 decoding produced no data for component %u", c);
            goto fail;
        }

    {
        const size_t npix = static_cast<size_t>(t->rows) * t->columns;
        const uint32_t ns = t->samples;
        if (bytes_per_sample == 1) {
            auto *o = static_cast<uint8_t *>(out);
            for (uint32_t c = 0; c < ns; c++) {
                const OPJ_INT32 *d = image->comps[c].data;
                for (size_t i = 0; i < npix; i++)
                    o[i * ns + c] = static_cast<uint8_t>(static_cast<uint32_t>(d[i]) & 0xFFu);
            }
        } else {
            auto *o = static_cast<uint16_t *>(out);
            for (uint32_t c = 0; c < ns; c++) {
                const OPJ_INT32 *d = image->comps[c].data;
                for (size_t i = 0; i < npix; i++)
                    o[i * ns + c] = static_cast<uint16_t>(static_cast<uint32_t>(d[i]) & 0xFFFFu);
            }
        }
    }
    if (got) {
        got->precision = prec;
        got->is_signed = sgnd;
    }

fail:
    if (image)
        opj_image_destroy(image);
    if (codec)
        opj_destroy_codec(codec);
    if (stream)
        opj_stream_destroy(stream);
    return st;
}

/* ------------------------------------------------------------------ fragments */

static bool starts_codestream(const Uint8 *p, Uint32 n)
{
    if (n >= 4 && p[0] == 0xFF && p[1] == 0x4F && p[2] == 0xFF && p[3] == 0x51)
        return true;
    return n >= 12 && std::memcmp(p, k_jp2_signature, 12) == 0;
}

enum cxr_status cxr_j2k_frame_bytes(DcmPixelSequence *seq, uint32_t frame, uint32_t frames,
                                    std::vector<uint8_t> &bytes, char *err)
{
    bytes.clear();
    const unsigned long nitems = seq ? seq->card() : 0;
    if (nitems < 2)
        return cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                          "encapsulated Pixel Data has no fragments after the offset table");
    if (frames < 1)
        frames = 1;
    if (frame >= frames)
        return cxr_seterr(err, CXR_ERR_DICOM_DECODE, "frame %u requested, the image has %u",
                          frame + 1, frames);

    struct frag {
        Uint8 *p;
        Uint32 n;
    };
    std::vector<frag> frags;
    frags.reserve(nitems - 1);
    for (unsigned long i = 1; i < nitems; i++) {
        DcmPixelItem *it = nullptr;
        Uint8 *p = nullptr;
        if (seq->getItem(it, i).bad() || !it)
            return cxr_seterr(err, CXR_ERR_DICOM_DECODE, "pixel fragment %lu unreadable", i);
        Uint32 n = it->getLength();
        if (n > 0 && (it->getUint8Array(p).bad() || !p))
            return cxr_seterr(err, CXR_ERR_DICOM_DECODE, "pixel fragment %lu unreadable", i);
        frags.push_back({p, n});
    }

    size_t first = 0, last = frags.size(); /* [first, last) */
    if (frames == 1) {
        /* every fragment belongs to the only frame */
    } else {
        /* Basic Offset Table: byte offsets of each frame's first fragment item,
         * counted from the first fragment's item tag (8-byte item headers). */
        DcmPixelItem *bot = nullptr;
        Uint8 *botp = nullptr;
        Uint32 botn = 0;
        if (seq->getItem(bot, 0).good() && bot && (botn = bot->getLength()) >= 4 * frames &&
            bot->getUint8Array(botp).good() && botp) {
            auto off_at = [&](uint32_t k) -> uint64_t {
                const Uint8 *q = botp + 4 * k;
                return static_cast<uint64_t>(q[0]) | static_cast<uint64_t>(q[1]) << 8 |
                       static_cast<uint64_t>(q[2]) << 16 | static_cast<uint64_t>(q[3]) << 24;
            };
            uint64_t start = off_at(frame);
            uint64_t end = frame + 1 < frames ? off_at(frame + 1) : UINT64_MAX;
            uint64_t pos = 0;
            first = last = SIZE_MAX;
            for (size_t i = 0; i < frags.size(); i++) {
                if (pos == start)
                    first = i;
                if (pos == end) {
                    last = i;
                    break;
                }
                pos += 8 + static_cast<uint64_t>(frags[i].n);
            }
            if (first == SIZE_MAX)
                return cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                                  "Basic Offset Table entry %u (%llu) points between "
                                  "fragments",
                                  frame, static_cast<unsigned long long>(start));
            if (last == SIZE_MAX)
                last = frags.size();
        } else if (frags.size() == frames) {
            first = frame;
            last = frame + 1;
        } else {
            /* no usable table: a frame begins at each fragment that starts a codestream */
            uint32_t k = 0;
            first = SIZE_MAX;
            for (size_t i = 0; i < frags.size(); i++) {
                if (!starts_codestream(frags[i].p, frags[i].n))
                    continue;
                if (k == frame)
                    first = i;
                else if (k == frame + 1) {
                    last = i;
                    break;
                }
                k++;
            }
            if (first == SIZE_MAX)
                return cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                                  "cannot find frame %u among %zu fragments (no offset "
                                  "table)",
                                  frame + 1, frags.size());
        }
    }
    if (first >= last)
        return cxr_seterr(err, CXR_ERR_DICOM_DECODE, "frame %u has no fragments", frame + 1);
    size_t total = 0;
    for (size_t i = first; i < last; i++)
        total += frags[i].n;
    if (total == 0)
        return cxr_seterr(err, CXR_ERR_DICOM_DECODE, "frame %u is empty", frame + 1);
    bytes.reserve(total);
    for (size_t i = first; i < last; i++)
        bytes.insert(bytes.end(), frags[i].p, frags[i].p + frags[i].n);
    return CXR_OK;
}
