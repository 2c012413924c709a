/* net_tls.cc — TLS for the DICOM SCP and SCU (DCMTK dcmtls over OpenSSL 3):
 * the non-downgrading BCP 195 profile (PS3.15 B.9), certificate loading and
 * verification modes, and the SCU's check that the server certificate names
 * the host we dialled (RFC 6125; DCMTK 3.6.7 does not do it). */
#include "net_internal.h"

#include "dcmtk/dcmnet/dcmtrans.h"

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <string.h>

namespace cxr_net
{

namespace
{

bool readable(const char *path)
{
    FILE *f = path && *path ? fopen(path, "rb") : NULL;
    if (!f)
        return false;
    fclose(f);
    return true;
}

/* The peer certificate of an association (DER from DCMTK), or NULL. */
X509 *peer_certificate(T_ASC_Association *assoc)
{
    unsigned long len = ASC_getPeerCertificateLength(assoc);
    if (len == 0 || len > (1UL << 20))
        return NULL;
    unsigned char *der = new unsigned char[len];
    X509 *cert = NULL;
    if (ASC_getPeerCertificate(assoc, der, len) == len) {
        const unsigned char *p = der;
        cert = d2i_X509(NULL, &p, (long)len);
    }
    delete[] der;
    return cert;
}

} // namespace

DcmTLSTransportLayer *tls_layer_new(const struct cxr_dicom_tls *tls, T_ASC_NetworkRole role,
                                    enum cxr_status *st, char *err)
{
    const bool server = role == NET_ACCEPTOR;
    const char *who = server ? "SCP" : "SCU";
    *st = CXR_ERR_INVALID_ARG;
    bool have_cert = tls->certificate && *tls->certificate;
    bool have_key = tls->private_key && *tls->private_key;
    bool have_ca = tls->ca_certificates && *tls->ca_certificates;
    if (server && (!have_cert || !have_key)) {
        set_err(err, "TLS %s: a certificate and a private key are required", who);
        return NULL;
    }
    if (have_cert != have_key) {
        set_err(err, "TLS %s: give both a certificate and its private key, or neither", who);
        return NULL;
    }
    if (tls->verify_peer && !have_ca) {
        set_err(err, "TLS %s: verify_peer needs ca_certificates (the CA to verify against)", who);
        return NULL;
    }
    const char *files[3] = {have_cert ? tls->certificate : NULL, have_key ? tls->private_key : NULL,
                            have_ca ? tls->ca_certificates : NULL};
    for (const char *f : files) {
        if (f && !readable(f)) {
            set_err(err, "TLS %s: cannot read '%s': %s", who, f, strerror(errno));
            *st = CXR_ERR_IO;
            return NULL;
        }
    }

    DcmTLSTransportLayer *layer = new DcmTLSTransportLayer(role, NULL, OFFalse);
    OFCondition c;
    if (!*layer) {
        set_err(err, "TLS %s: OpenSSL context could not be created", who);
        *st = CXR_ERR_INTERNAL;
        goto fail;
    }
    c = layer->setTLSProfile(TSP_Profile_BCP195_ND);
    if (c.good())
        c = layer->activateCipherSuites();
    if (c.bad()) {
        set_err(err, "TLS %s: BCP 195 profile: %s", who, c.text());
        *st = CXR_ERR_INTERNAL;
        goto fail;
    }
    if (have_cert) {
        c = layer->setPrivateKeyFile(tls->private_key, DCF_Filetype_PEM);
        if (c.bad()) {
            set_err(err, "TLS %s: private key '%s' unusable (PEM, unencrypted): %s", who,
                    tls->private_key, c.text());
            goto fail;
        }
        c = layer->setCertificateFile(tls->certificate, DCF_Filetype_PEM);
        if (c.bad()) {
            set_err(err, "TLS %s: certificate '%s' unusable (PEM): %s", who, tls->certificate,
                    c.text());
            goto fail;
        }
        if (!layer->checkPrivateKeyMatchesCertificate()) {
            set_err(err, "TLS %s: private key '%s' does not match certificate '%s'", who,
                    tls->private_key, tls->certificate);
            goto fail;
        }
    }
    if (have_ca) {
        c = layer->addTrustedCertificateFile(tls->ca_certificates, DCF_Filetype_PEM);
        if (c.bad()) {
            set_err(err, "TLS %s: CA file '%s' unusable (PEM): %s", who, tls->ca_certificates,
                    c.text());
            goto fail;
        }
    }
    if (tls->verify_peer)
        layer->setCertificateVerification(DCV_requireCertificate);
    else if (have_ca)
        layer->setCertificateVerification(server ? DCV_checkCertificate : DCV_requireCertificate);
    else
        layer->setCertificateVerification(DCV_ignoreCertificate);
    *st = CXR_OK;
    return layer;
fail:
    delete layer;
    return NULL;
}

bool tls_check_host(T_ASC_Association *assoc, const char *host, char *err)
{
    X509 *cert = peer_certificate(assoc);
    if (!cert) {
        set_err(err, "TLS: the server at %s showed no certificate", host);
        return false;
    }
    unsigned char addr[16];
    bool is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
    int ok = is_ip ? X509_check_ip_asc(cert, host, 0) : X509_check_host(cert, host, 0, 0, NULL);
    if (ok != 1) {
        char subject[256];
        X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
        set_err(err,
                "TLS: the server certificate (%s) does not name '%s' (no matching subjectAltName "
                "%s); dial the name the certificate was issued for",
                subject, host, is_ip ? "IP" : "DNS");
    }
    X509_free(cert);
    return ok == 1;
}

void tls_peer_subject(T_ASC_Association *assoc, char *out, size_t len)
{
    out[0] = '\0';
    X509 *cert = peer_certificate(assoc);
    if (!cert)
        return;
    X509_NAME_oneline(X509_get_subject_name(cert), out, (int)len);
    X509_free(cert);
}

} // namespace cxr_net
