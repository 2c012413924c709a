/* check_dicom_net_scu.c — the node's SCU (C-ECHO, C-STORE of one file)
 * against DCMTK's storescp and against our SCP, its error reports (peer down,
 * rejected with the PS3.8 reason, failure status), and DICOM TLS (BCP 195)
 * both ways with certificates made here by openssl: DCMTK's echoscu/storescu
 * +tls against our SCP, our SCU against storescp +tls, client certificate
 * verification, a foreign CA, a certificate for another host, and a plain
 * client on the TLS port. */
#include "dicom_net_fixture.h"

static char g_log[PATH_MAX];

static struct cxr_dicom_scu_target target(const char *called, uint16_t port)
{
    struct cxr_dicom_scu_target t;
    memset(&t, 0, sizeof t);
    t.called_ae = called;
    t.calling_ae = "CXRSCU";
    t.host = "127.0.0.1";
    t.port = port;
    t.connect_timeout_s = 5;
    t.dimse_timeout_s = 20;
    return t;
}

/* DCMTK's storescp (bit-preserving, all transfer syntaxes unless
 * uncompressed_only) on a free port; returns its pid. */
static pid_t start_storescp(const char *dir, const char *out, uint16_t *port,
                            bool uncompressed_only, const char *tls_args,
                            const struct cxr_dicom_tls *probe_tls)
{
    *port = free_port();
    char log[PATH_MAX];
    pathf(log, sizeof log, "%s/storescp-%u.log", dir, *port);
    pid_t pid = spawn(log, "exec storescp -aet DEST %s +B -od '%s' %s %u",
                      uncompressed_only ? "" : "+xa", out, tls_args ? tls_args : "", *port);
    ck_assert_msg(wait_peer("DEST", *port, probe_tls), "storescp did not start: %s",
                  file_text(log));
    return pid;
}

static void stop_child(pid_t pid)
{
    kill(pid, SIGTERM);
    wait_child(pid);
}

/* ---- SCU against DCMTK's storescp --------------------------------------- */

/* Sends `files` with our SCU and checks each arrived as-is: same transfer
 * syntax and, for the files generated here (no sequences, not deflated:
 * DCMTK re-encodes those), the same data set bytes. `rx_dir` is where the
 * peer writes (storescp) or NULL for our SCP `s`. */
static int send_all(struct cxr_dicom_scu_target *t, struct corpus_file *files, int n,
                    const char *rx_dir, struct srv *s, bool skip_57)
{
    int sent = 0;
    for (int i = 0; i < n; i++) {
        if (skip_57 && !strcmp(files[i].ts, "1.2.840.10008.1.2.4.57"))
            continue;
        char err[CXR_ERRLEN] = "";
        uint16_t status = 0x1234;
        enum cxr_status st = cxr_dicom_scu_store_file(t, files[i].path, &status, err);
        ck_assert_msg(st == CXR_OK, "%s: %s", files[i].path, err);
        ck_assert_uint_eq(status, 0);
        sent++;
        char got[PATH_MAX] = "", ts[65], inst[65];
        if (rx_dir) {
            find_by_uid(rx_dir, files[i].uid, got);
        } else {
            for (int k = 0; k < s->n_events; k++)
                if (!strcmp(s->ev[k].sop_instance, files[i].uid))
                    pathf(got, sizeof got, "%s", s->ev[k].kept);
        }
        ck_assert_msg(got[0], "the peer has no %s", files[i].path);
        ck_assert(part10_meta(got, NULL, inst, ts));
        if (files[i].ts[0]) {
            ck_assert_msg(!strcmp(ts, files[i].ts), "%s sent in %s, not as-is (%s)", files[i].path,
                          ts, files[i].ts);
            if (files[i].generated && strcmp(ts, "1.2.840.10008.1.2.1.99") != 0)
                ck_assert_msg(same_dataset(got, files[i].path), "%s changed on the way",
                              files[i].path);
        }
    }
    return sent;
}

/* Every corpus file goes as-is, to DCMTK's storescp (+xa, which does not
 * take JPEG .57) and to our SCP (every syntax, .57 included, which storescu
 * cannot propose). */
START_TEST(test_scu_store_as_is)
{
    char *dir = cxr_test_tmpdir();
    char out[PATH_MAX], cdir[PATH_MAX];
    pathf(out, sizeof out, "%s/out", dir);
    pathf(cdir, sizeof cdir, "%s/corpus", dir);
    mkdir(out, 0700);
    mkdir(cdir, 0700);
    static struct corpus_file files[64];
    int n = corpus_build(cdir, files, 64, true);
    uint16_t port;
    pid_t pid = start_storescp(dir, out, &port, false, NULL, NULL);
    struct cxr_dicom_scu_target t = target("DEST", port);
    int sent = send_all(&t, files, n, out, NULL, true);
    ck_assert_int_gt(sent, 12);
    /* (two shared files hold the same instance: count distinct UIDs) */
    int distinct = 0;
    for (int i = 0; i < n; i++) {
        bool seen = !strcmp(files[i].ts, "1.2.840.10008.1.2.4.57");
        for (int k = 0; k < i && !seen; k++)
            seen = !strcmp(files[k].uid, files[i].uid) &&
                   strcmp(files[k].ts, "1.2.840.10008.1.2.4.57");
        distinct += !seen;
    }
    ck_assert_int_eq(dir_count(out), distinct);
    stop_child(pid);

    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    srv_start(&s, &cfg);
    t = target(NET_AE, s.port);
    ck_assert_int_eq(send_all(&t, files, n, NULL, &s, false), n);
    srv_stop(&s);
    srv_cleanup(&s);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

/* A compressed file to a peer that takes only uncompressed syntaxes: either
 * converted (decoders registered) to an uncompressed syntax, or refused with
 * CXR_ERR_DICOM_TS naming the syntax: never sent mislabelled. */
START_TEST(test_scu_compressed_to_uncompressed_peer)
{
    char *dir = cxr_test_tmpdir();
    char out[PATH_MAX], src[PATH_MAX], jpg[PATH_MAX];
    pathf(out, sizeof out, "%s/out", dir);
    pathf(src, sizeof src, "%s/src.dcm", dir);
    pathf(jpg, sizeof jpg, "%s/jpeg.dcm", dir);
    mkdir(out, 0700);
    write_cr(src, 64, 64, 16, NULL);
    ck_assert_int_eq(cxr_test_sh("dcmcjpeg +e1 '%s' '%s' >/dev/null 2>&1", src, jpg), 0);
    uint16_t port;
    pid_t pid = start_storescp(dir, out, &port, true, NULL, NULL);
    struct cxr_dicom_scu_target t = target("DEST", port);
    char err[CXR_ERRLEN] = "";
    uint16_t status;
    enum cxr_status st = cxr_dicom_scu_store_file(&t, jpg, &status, err);
    if (st == CXR_OK) {
        ck_assert_int_eq(dir_count(out), 1);
        char got[PATH_MAX], inst[65], ts[65];
        pathf(got, sizeof got, "%s/%s", out, "");
        DIR *d = opendir(out);
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.')
                pathf(got, sizeof got, "%s/%s", out, e->d_name);
        closedir(d);
        ck_assert(part10_meta(got, NULL, inst, ts));
        ck_assert_msg(!strcmp(ts, "1.2.840.10008.1.2.1") || !strcmp(ts, "1.2.840.10008.1.2"), "%s",
                      ts);
    } else {
        ck_assert_msg(st == CXR_ERR_DICOM_TS, "%d: %s", st, err);
        ck_assert_uint_eq(status, CXR_DIMSE_NO_RESPONSE);
        ck_assert_msg(strstr(err, "JPEG"), "%s", err);
        ck_assert_int_eq(dir_count(out), 0);
    }
    stop_child(pid);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_scu_echo_and_peer_down)
{
    char *dir = cxr_test_tmpdir();
    char out[PATH_MAX], f[PATH_MAX];
    pathf(out, sizeof out, "%s/out", dir);
    pathf(f, sizeof f, "%s/one.dcm", dir);
    mkdir(out, 0700);
    write_cr(f, 32, 32, 16, NULL);
    uint16_t port;
    pid_t pid = start_storescp(dir, out, &port, false, NULL, NULL);
    struct cxr_dicom_scu_target t = target("DEST", port);
    char err[CXR_ERRLEN] = "";
    ck_assert_msg(cxr_dicom_scu_echo(&t, err) == CXR_OK, "%s", err);
    stop_child(pid);
    /* nobody listens on the port now */
    ck_assert_int_eq(cxr_dicom_scu_echo(&t, err), CXR_ERR_DICOM_NET);
    ck_assert_msg(strstr(err, "refused") && strstr(err, "DEST@127.0.0.1"), "%s", err);
    uint16_t status = 0;
    ck_assert_int_eq(cxr_dicom_scu_store_file(&t, f, &status, err), CXR_ERR_DICOM_NET);
    ck_assert_uint_eq(status, CXR_DIMSE_NO_RESPONSE);
    ck_assert_msg(strstr(err, "refused"), "%s", err);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_scu_bad_input)
{
    char *dir = cxr_test_tmpdir();
    char junk[PATH_MAX];
    pathf(junk, sizeof junk, "%s/junk.dcm", dir);
    ck_assert(cxr_test_write_file(junk, "this is not DICOM at all, not even close......", 46));
    struct cxr_dicom_scu_target t = target("DEST", 1);
    char err[CXR_ERRLEN];
    uint16_t status = 0;
    ck_assert_int_eq(cxr_dicom_scu_store_file(&t, "/nonexistent/x.dcm", &status, err), CXR_ERR_IO);
    ck_assert_msg(strstr(err, "/nonexistent/x.dcm"), "%s", err);
    ck_assert_uint_eq(status, CXR_DIMSE_NO_RESPONSE);
    ck_assert_int_eq(cxr_dicom_scu_store_file(&t, junk, &status, err), CXR_ERR_DICOM_PARSE);
    ck_assert_msg(strstr(err, "junk.dcm"), "%s", err);
    struct cxr_dicom_scu_target bad = target("WAY_TOO_LONG_AE_TITLE", 104);
    ck_assert_int_eq(cxr_dicom_scu_echo(&bad, err), CXR_ERR_INVALID_ARG);
    bad = target("DEST", 0);
    ck_assert_int_eq(cxr_dicom_scu_echo(&bad, err), CXR_ERR_INVALID_ARG);
    ck_assert_int_eq(cxr_dicom_scu_echo(NULL, err), CXR_ERR_INVALID_ARG);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

/* ---- SCU against our SCP ------------------------------------------------ */

START_TEST(test_scu_reports_rejection_and_status)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    srv_start(&s, &cfg);
    char f[PATH_MAX], uid[65];
    pathf(f, sizeof f, "%s/one.dcm", s.dir);
    write_cr(f, 48, 48, 16, uid);
    char err[CXR_ERRLEN] = "";
    uint16_t status = 0;

    struct cxr_dicom_scu_target t = target("NOTUS", s.port);
    ck_assert_int_eq(cxr_dicom_scu_store_file(&t, f, &status, err), CXR_ERR_DICOM_NET);
    ck_assert_msg(strstr(err, "rejected") && strstr(err, "called AE title not recognized"), "%s",
                  err);
    ck_assert_uint_eq(status, CXR_DIMSE_NO_RESPONSE);

    t = target(NET_AE, s.port);
    s.answer = CXR_DIMSE_OUT_OF_RESOURCES;
    ck_assert_int_eq(cxr_dicom_scu_store_file(&t, f, &status, err), CXR_ERR_DICOM_NET);
    ck_assert_uint_eq(status, 0xA700);
    ck_assert_msg(strstr(err, "0xA700") && strstr(err, "Out of Resources"), "%s", err);
    ck_assert_int_eq(dir_count(s.tmp), 0);

    s.answer = 0xB000; /* a warning counts as stored */
    ck_assert_msg(cxr_dicom_scu_store_file(&t, f, &status, err) == CXR_OK, "%s", err);
    ck_assert_uint_eq(status, 0xB000);

    s.answer = 0;
    ck_assert_msg(cxr_dicom_scu_store_file(&t, f, &status, err) == CXR_OK, "%s", err);
    ck_assert_uint_eq(status, 0);
    ck_assert_int_eq(srv_events(&s), 3);
    ck_assert_str_eq(s.ev[2].calling, "CXRSCU");
    ck_assert_str_eq(s.ev[2].sop_instance, uid);
    ck_assert(same_dataset(s.ev[2].kept, f));
    srv_stop(&s);
    srv_cleanup(&s);
}
END_TEST

/* ---- TLS ------------------------------------------------------------------ */

static char g_pki[PATH_MAX];
static bool g_pki_ok;

static const char *pki(const char *name)
{
    static __thread char buf[8][PATH_MAX];
    static __thread int k;
    k = (k + 1) % 8;
    pathf(buf[k], sizeof buf[k], "%s/%s", g_pki, name);
    return buf[k];
}

/* Once per TLS test case (in the parent, not forked): a test CA, a server
 * certificate for 127.0.0.1/localhost, a client certificate, a foreign CA
 * with its own client certificate, and a server certificate for another
 * host name. RSA 2048 / SHA-256, as the BCP 195 profile wants. */
static void pki_setup(void)
{
    char *d = cxr_test_tmpdir();
    pathf(g_pki, sizeof g_pki, "%s", d);
    free(d);
    int rc = cxr_test_sh(
        "cd '%s' && exec >pki.log 2>&1 && set -e\n"
        "ca() { openssl req -x509 -newkey rsa:2048 -sha256 -nodes -days 2 -keyout $1.key -out $1.pem "
        "-subj \"/CN=$2\" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign; }\n"
        "leaf() { openssl req -newkey rsa:2048 -sha256 -nodes -keyout $1.key -out $1.csr -subj \"/CN=$3\";\n"
        "  printf '%%s\\n' \"$4\" > $1.ext;\n"
        "  openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -days 2 -sha256 "
        "-out $1.pem -extfile $1.ext; }\n"
        "ca ca 'cxr test CA'\n"
        "ca evilca 'someone else CA'\n"
        "leaf server ca localhost 'subjectAltName=IP:127.0.0.1,DNS:localhost'\n"
        "leaf client ca CXRSCU 'extendedKeyUsage=clientAuth'\n"
        "leaf evilclient evilca CXRSCU 'extendedKeyUsage=clientAuth'\n"
        "leaf otherhost ca pacs.example.org 'subjectAltName=DNS:pacs.example.org'\n",
        g_pki);
    g_pki_ok = rc == 0;
    if (!g_pki_ok)
        printf("openssl failed: %s\n", file_text(pki("pki.log")));
}

static void pki_teardown(void) { cxr_test_rmtree(g_pki); }

/* A copy that lives until the process ends (no leak to report). */
static const char *keep(const char *path)
{
    static char pool[32][PATH_MAX];
    static int k;
    k = (k + 1) % 32;
    pathf(pool[k], sizeof pool[k], "%s", path);
    return pool[k];
}

static struct cxr_dicom_tls tls_of(const char *cert, const char *ca, bool verify)
{
    struct cxr_dicom_tls t;
    memset(&t, 0, sizeof t);
    t.enabled = true;
    if (cert) {
        char c[64], k[64];
        pathf(c, sizeof c, "%s.pem", cert);
        pathf(k, sizeof k, "%s.key", cert);
        t.certificate = keep(pki(c));
        t.private_key = keep(pki(k));
    }
    t.ca_certificates = ca ? keep(pki(ca)) : NULL;
    t.verify_peer = verify;
    return t;
}

static void tls_scp_start(struct srv *s, bool verify_peer)
{
    ck_assert_msg(g_pki_ok, "certificates could not be made");
    struct cxr_dicom_scp_config cfg = srv_config(s);
    cfg.tls = tls_of("server", verify_peer ? "ca.pem" : NULL, verify_peer);
    srv_start(s, &cfg);
    pathf(g_log, sizeof g_log, "%s/peer.log", s->dir);
}

/* DCMTK's clients with TLS against our SCP requiring client certificates. */
START_TEST(test_tls_scp_with_dcmtk_clients)
{
    struct srv s;
    tls_scp_start(&s, true);
    const char *good = "+tls %s %s +cf %s";
    char args[4 * PATH_MAX];
    pathf(args, sizeof args, good, pki("client.key"), pki("client.pem"), pki("ca.pem"));
    ck_assert_msg(
        run_logged(g_log, "echoscu %s -aet TLSSCU -aec %s 127.0.0.1 %u", args, NET_AE, s.port) == 0,
        "%s", file_text(g_log));
    char f[PATH_MAX], uid[65];
    pathf(f, sizeof f, "%s/tls.dcm", s.dir);
    write_cr(f, 128, 96, 16, uid);
    ck_assert_msg(run_logged(g_log, "storescu %s -aet TLSSCU -aec %s 127.0.0.1 %u '%s'", args,
                             NET_AE, s.port, f) == 0,
                  "%s", file_text(g_log));
    ck_assert_int_eq(srv_events(&s), 1);
    ck_assert_str_eq(s.ev[0].sop_instance, uid);
    ck_assert(same_dataset(s.ev[0].kept, f));

    /* plain DICOM on the TLS port */
    ck_assert_int_ne(run_logged(g_log, "echoscu -aet PLAIN -aec %s 127.0.0.1 %u", NET_AE, s.port),
                     0);
    /* a client certificate from another CA */
    pathf(args, sizeof args, good, pki("evilclient.key"), pki("evilclient.pem"), pki("ca.pem"));
    ck_assert_int_ne(
        run_logged(g_log, "echoscu %s -aet TLSSCU -aec %s 127.0.0.1 %u", args, NET_AE, s.port), 0);
    /* no client certificate at all */
    ck_assert_int_ne(run_logged(g_log, "echoscu +tla +cf %s -aet TLSSCU -aec %s 127.0.0.1 %u",
                                pki("ca.pem"), NET_AE, s.port),
                     0);
    /* the SCP is still serving */
    pathf(args, sizeof args, good, pki("client.key"), pki("client.pem"), pki("ca.pem"));
    ck_assert_msg(
        run_logged(g_log, "echoscu %s -aet TLSSCU -aec %s 127.0.0.1 %u", args, NET_AE, s.port) == 0,
        "%s", file_text(g_log));
    struct cxr_dicom_scp_stats st;
    cxr_dicom_scp_get_stats(s.scp, &st);
    ck_assert_uint_eq(st.associations_accepted, 3);
    ck_assert_uint_ge(st.associations_failed, 3);
    srv_stop(&s);
    srv_cleanup(&s);
}
END_TEST

/* Without verify_peer the SCP takes TLS clients that show no certificate. */
START_TEST(test_tls_scp_without_client_auth)
{
    struct srv s;
    tls_scp_start(&s, false);
    ck_assert_msg(run_logged(g_log, "echoscu +tla +cf %s -aet TLSSCU -aec %s 127.0.0.1 %u",
                             pki("ca.pem"), NET_AE, s.port) == 0,
                  "%s", file_text(g_log));
    srv_stop(&s);
    srv_cleanup(&s);
}
END_TEST

/* Our SCU with TLS to DCMTK's storescp +tls (which requires a client
 * certificate): works with our client certificate and the CA; fails without
 * a client certificate, with a foreign CA, and when the server's certificate
 * names another host. */
START_TEST(test_tls_scu_to_storescp)
{
    ck_assert_msg(g_pki_ok, "certificates could not be made");
    char *dir = cxr_test_tmpdir();
    char out[PATH_MAX], f[PATH_MAX], args[3 * PATH_MAX];
    pathf(out, sizeof out, "%s/out", dir);
    pathf(f, sizeof f, "%s/one.dcm", dir);
    mkdir(out, 0700);
    char uid[65];
    write_cr(f, 64, 64, 16, uid);
    struct cxr_dicom_tls good = tls_of("client", "ca.pem", true);
    pathf(args, sizeof args, "+tls %s %s +cf %s", pki("server.key"), pki("server.pem"),
          pki("ca.pem"));
    uint16_t port;
    pid_t pid = start_storescp(dir, out, &port, false, args, &good);

    struct cxr_dicom_scu_target t = target("DEST", port);
    t.tls = good;
    char err[CXR_ERRLEN] = "";
    uint16_t status = 1;
    ck_assert_msg(cxr_dicom_scu_store_file(&t, f, &status, err) == CXR_OK, "%s", err);
    ck_assert_uint_eq(status, 0);
    char got[PATH_MAX];
    find_by_uid(out, uid, got);
    ck_assert_msg(got[0] && same_dataset(got, f), "file not received intact");

    t.tls = tls_of(NULL, "ca.pem", true);
    ck_assert_int_eq(cxr_dicom_scu_echo(&t, err), CXR_ERR_DICOM_NET);
    t.tls = tls_of("client", "evilca.pem", true);
    ck_assert_int_eq(cxr_dicom_scu_echo(&t, err), CXR_ERR_DICOM_NET);
    t.tls.enabled = false;
    ck_assert_int_eq(cxr_dicom_scu_echo(&t, err), CXR_ERR_DICOM_NET);
    stop_child(pid);

    /* a server certificate issued for pacs.example.org, dialled as 127.0.0.1 */
    pathf(args, sizeof args, "+tls %s %s +cf %s", pki("otherhost.key"), pki("otherhost.pem"),
          pki("ca.pem"));
    struct cxr_dicom_tls unchecked = tls_of("client", NULL, false);
    pid = start_storescp(dir, out, &port, false, args, &unchecked);
    t = target("DEST", port);
    t.tls = good;
    ck_assert_int_eq(cxr_dicom_scu_echo(&t, err), CXR_ERR_DICOM_NET);
    ck_assert_msg(strstr(err, "does not name '127.0.0.1'"), "%s", err);
    stop_child(pid);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

/* Our SCU and our SCP, both with TLS and mutual authentication. */
START_TEST(test_tls_scu_to_our_scp)
{
    struct srv s;
    tls_scp_start(&s, true);
    char f[PATH_MAX], uid[65];
    pathf(f, sizeof f, "%s/one.dcm", s.dir);
    write_cr(f, 64, 64, 16, uid);
    struct cxr_dicom_scu_target t = target(NET_AE, s.port);
    t.tls = tls_of("client", "ca.pem", true);
    char err[CXR_ERRLEN] = "";
    uint16_t status;
    ck_assert_msg(cxr_dicom_scu_echo(&t, err) == CXR_OK, "%s", err);
    ck_assert_msg(cxr_dicom_scu_store_file(&t, f, &status, err) == CXR_OK, "%s", err);
    ck_assert_int_eq(srv_events(&s), 1);
    ck_assert(same_dataset(s.ev[0].kept, f));
    t.tls.enabled = false;
    ck_assert_int_eq(cxr_dicom_scu_echo(&t, err), CXR_ERR_DICOM_NET);
    /* a bad TLS setup is reported before connecting */
    t.tls = tls_of("client", NULL, true);
    ck_assert_int_eq(cxr_dicom_scu_echo(&t, err), CXR_ERR_INVALID_ARG);
    ck_assert_msg(strstr(err, "ca_certificates"), "%s", err);
    t.tls = tls_of("client", "ca.pem", true);
    t.tls.private_key = keep(pki("server.key")); /* not the client certificate's key */
    ck_assert_int_eq(cxr_dicom_scu_echo(&t, err), CXR_ERR_INVALID_ARG);
    ck_assert_msg(strstr(err, "does not match"), "%s", err);
    srv_stop(&s);
    srv_cleanup(&s);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("dicom_net_scu");
    TCase *tc = tcase_create("scu");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_scu_store_as_is);
    tcase_add_test(tc, test_scu_compressed_to_uncompressed_peer);
    tcase_add_test(tc, test_scu_echo_and_peer_down);
    tcase_add_test(tc, test_scu_bad_input);
    tcase_add_test(tc, test_scu_reports_rejection_and_status);
    suite_add_tcase(s, tc);
    tc = tcase_create("tls");
    tcase_set_timeout(tc, 600);
    tcase_add_unchecked_fixture(tc, pki_setup, pki_teardown);
    tcase_add_test(tc, test_tls_scp_with_dcmtk_clients);
    tcase_add_test(tc, test_tls_scp_without_client_auth);
    tcase_add_test(tc, test_tls_scu_to_storescp);
    tcase_add_test(tc, test_tls_scu_to_our_scp);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(suite()); }
