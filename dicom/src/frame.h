/* frame.h — the first frame of an instance, decoded to native samples (C++
 * internal; see frame.cc). */
#ifndef CXR_DICOM_FRAME_H
#define CXR_DICOM_FRAME_H

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "cxr/dicom.h"

/* Native samples of one frame plus the Image Pixel Module values that
 * describe them (after any correction the codestream forced). Owns `data`. */
struct cxr_frame {
    uint8_t *data = nullptr; /* little-endian host order; 8- or 16-bit samples */
    size_t size = 0;
    uint16_t rows = 0, columns = 0, samples = 0;
    uint16_t bits_allocated = 0, bits_stored = 0, high_bit = 0;
    uint16_t pixel_representation = 0, planar_configuration = 0;
    char photometric[20] = ""; /* of the decoded samples (YBR_ICT/RCT → RGB, JPEG YBR → RGB) */
    char note[160] = "";       /* a correction made while decoding, "" none */

    cxr_frame() = default;
    cxr_frame(const cxr_frame &) = delete;
    cxr_frame &operator=(const cxr_frame &) = delete;
    ~cxr_frame() { std::free(data); }
    bool alloc(size_t n)
    {
        std::free(data);
        data = static_cast<uint8_t *>(std::calloc(n + 1, 1));
        size = data ? n : 0;
        return data != nullptr;
    }
};

/* Decodes frame 1 of `inst` (any supported transfer syntax) into `f`.
 * Unsupported syntax → CXR_ERR_DICOM_TS naming it; geometry is checked
 * against limits before allocating. */
enum cxr_status cxr_frame_decode(struct cxr_dicom_instance *inst, struct cxr_frame *f, char *err);

/* Sample i of the frame (index into the stored layout) as the stored value:
 * shifted by HighBit, masked to BitsStored, sign-extended when signed. */
int32_t cxr_frame_stored_value(const struct cxr_frame *f, size_t i);

#endif
