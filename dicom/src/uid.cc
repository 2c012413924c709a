// uid.cc — UIDs under the "2.25" root (PS3.5 B.2: a UUID as one decimal
// integer). Random UIDs are RFC 9562 version 4 UUIDs; derived ones (device
// observer, tracking UIDs) are version 8 UUIDs built from SHA-256, so the
// same input always gives the same UID. No DCMTK here.
#include "sr_internal.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>

#include <sys/random.h>
#include <unistd.h>

namespace
{

// Writes "2.25." followed by the 128-bit big-endian integer in `b` in
// decimal (at most 39 digits, so at most 44 characters; never a leading zero
// because the variant bit makes the value non-zero).
void format_2_25(const uint8_t b[16], char out[CXR_DICOM_UID_LEN])
{
    uint8_t num[16];
    std::memcpy(num, b, sizeof num);
    char digits[48];
    int nd = 0;
    bool nonzero = true;
    while (nonzero) { // repeated division by 10, most significant byte first
        unsigned rem = 0;
        nonzero = false;
        for (int i = 0; i < 16; i++) {
            unsigned cur = (rem << 8) | num[i];
            num[i] = (uint8_t)(cur / 10);
            rem = cur % 10;
            if (num[i])
                nonzero = true;
        }
        digits[nd++] = (char)('0' + rem);
    }
    int pos = std::snprintf(out, CXR_DICOM_UID_LEN, "2.25.");
    while (nd > 0 && pos < CXR_DICOM_UID_LEN - 1)
        out[pos++] = digits[--nd];
    out[pos] = '\0';
}

void set_uuid_bits(uint8_t b[16], unsigned version)
{
    b[6] = (uint8_t)((b[6] & 0x0F) | (version << 4));
    b[8] = (uint8_t)((b[8] & 0x3F) | 0x80); // RFC 9562 variant 10xx
}

bool sha256(const void *data, size_t len, uint8_t md[32])
{
    unsigned int mdlen = 0;
    return EVP_Digest(data, len, md, &mdlen, EVP_sha256(), nullptr) == 1 && mdlen == 32;
}

// 16 random bytes: OpenSSL's CSPRNG, else the kernel's. The last resort
// (both failed: no entropy at all, which a running Linux system does not
// have) hashes time, pid and a counter so that UIDs still differ.
void random16(uint8_t b[16])
{
    if (RAND_bytes(b, 16) == 1)
        return;
    if (getrandom(b, 16, 0) == 16)
        return;
    static std::atomic<uint64_t> counter{0};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t seed[4] = {(uint64_t)ts.tv_sec, (uint64_t)ts.tv_nsec, (uint64_t)getpid(),
                        counter.fetch_add(1)};
    uint8_t md[32];
    if (sha256(seed, sizeof seed, md))
        std::memcpy(b, md, 16);
    else
        std::memcpy(b, seed, 16);
}

} // namespace

extern "C" void cxr_dicom_uid_new(char out[CXR_DICOM_UID_LEN])
{
    uint8_t b[16];
    random16(b);
    set_uuid_bits(b, 4);
    format_2_25(b, out);
}

extern "C" void cxr_dicom_uid_from_bytes(const void *data, size_t len, char out[CXR_DICOM_UID_LEN])
{
    uint8_t md[32];
    if (!sha256(data, len, md)) {
        // OpenSSL without SHA-256 is a broken installation; a random UID is
        // still a valid, unique one (it only loses stability).
        cxr_dicom_uid_new(out);
        return;
    }
    set_uuid_bits(md, 8);
    format_2_25(md, out);
}

extern "C" void cxr_dicom_uid_device_observer(const char *product, char out[CXR_DICOM_UID_LEN])
{
    char key[600];
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0)
        std::snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    // "device-observer" NUL host NUL product: the NULs keep ("ab","c") and
    // ("a","bc") apart.
    int n = std::snprintf(key, sizeof key, "device-observer%c%s%c%.255s", '\0', host, '\0',
                          product ? product : "");
    cxr_dicom_uid_from_bytes(key, n > 0 ? (size_t)n : 0, out);
}

extern "C" bool cxr_dicom_uid_valid(const char *uid)
{
    if (!uid)
        return false;
    size_t n = std::strlen(uid);
    if (n == 0 || n > 64 || uid[0] == '.' || uid[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = uid[i];
        if (c == '.') {
            if (uid[i + 1] == '.')
                return false;
        } else if (c < '0' || c > '9') {
            return false;
        }
    }
    return true;
}
