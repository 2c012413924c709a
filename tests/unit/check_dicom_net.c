/* check_dicom_net.c — the node's DICOM SCP against real DCMTK peers
 * (echoscu, storescu, storescp as the bit-preserving reference) and raw
 * sockets: association policy and reject reasons (PS3.8 Table 9-21),
 * bit-preserving C-STORE of every accepted transfer syntax, the association
 * cap, failure statuses and disk-full handling (0xA700, no partial file),
 * malformed and truncated streams, and stop. The SCU and TLS are in
 * check_dicom_net_scu.c. */
#include <inttypes.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>

#include "dicom_net_fixture.h"

static char g_log[PATH_MAX];

static void setup_log(struct srv *s) { pathf(g_log, sizeof g_log, "%s/peer.log", s->dir); }

/* echoscu against our SCP; returns its exit status, output in g_log. */
static int echoscu(uint16_t port, const char *calling, const char *called)
{
    return run_logged(g_log, "echoscu -aet %s -aec %s 127.0.0.1 %u", calling, called, port);
}

static enum cxr_status our_echo(uint16_t port, const char *calling, const char *called, char *err)
{
    struct cxr_dicom_scu_target t = {.called_ae = called,
                                     .calling_ae = calling,
                                     .host = "127.0.0.1",
                                     .port = port,
                                     .connect_timeout_s = 5,
                                     .dimse_timeout_s = 10};
    return cxr_dicom_scu_echo(&t, err);
}

/* ---- association policy ----------------------------------------------- */

START_TEST(test_echo_accepted)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    srv_start(&s, &cfg);
    setup_log(&s);
    ck_assert_msg(echoscu(s.port, "NETSCU", NET_AE) == 0, "echoscu: %s", file_text(g_log));
    char err[CXR_ERRLEN] = "";
    ck_assert_msg(our_echo(s.port, "NETSCU", NET_AE, err) == CXR_OK, "%s", err);
    struct cxr_dicom_scp_stats st;
    cxr_dicom_scp_get_stats(s.scp, &st);
    ck_assert_uint_eq(st.associations_accepted, 2);
    ck_assert_uint_eq(st.echoes, 2);
    ck_assert_uint_eq(st.associations_rejected, 0);
    srv_stop(&s);
    srv_cleanup(&s);
}
END_TEST

START_TEST(test_called_ae_rejected)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    srv_start(&s, &cfg);
    setup_log(&s);
    ck_assert_int_ne(echoscu(s.port, "NETSCU", "WRONGAE"), 0);
    ck_assert_msg(file_contains(g_log, "Called AE Title Not Recognized"), "%s", file_text(g_log));
    ck_assert_msg(file_contains(g_log, "Rejected Permanent"), "%s", file_text(g_log));
    char err[CXR_ERRLEN] = "";
    ck_assert_int_eq(our_echo(s.port, "NETSCU", "WRONGAE", err), CXR_ERR_DICOM_NET);
    ck_assert_msg(strstr(err, "called AE title not recognized") &&
                      strstr(err, "rejected permanent"),
                  "%s", err);
    /* the assoc callback only runs once the policy passed */
    ck_assert_int_eq(s.assoc_calls, 0);
    struct cxr_dicom_scp_stats st;
    cxr_dicom_scp_get_stats(s.scp, &st);
    ck_assert_uint_eq(st.associations_rejected, 2);
    srv_stop(&s);

    cfg.check_called_ae = false;
    srv_start(&s, &cfg);
    ck_assert_msg(echoscu(s.port, "NETSCU", "WRONGAE") == 0, "%s", file_text(g_log));
    srv_stop(&s);
    srv_cleanup(&s);
}
END_TEST

START_TEST(test_allowlist)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    struct cxr_dicom_peer_rule rules[4];
    memset(rules, 0, sizeof rules);
    pathf(rules[0].ae_title, sizeof rules[0].ae_title, "GOODSCU");
    pathf(rules[1].ae_title, sizeof rules[1].ae_title, "HOSTSCU");
    pathf(rules[1].host, sizeof rules[1].host, "10.9.9.9");
    pathf(rules[2].ae_title, sizeof rules[2].ae_title, "NETSCU");
    pathf(rules[2].host, sizeof rules[2].host, "127.0.0.0/8");
    pathf(rules[3].ae_title, sizeof rules[3].ae_title, "LOCALSCU");
    pathf(rules[3].host, sizeof rules[3].host, "localhost");
    cfg.allowed_peers = rules;
    cfg.allowed_peer_count = 4;
    srv_start(&s, &cfg);
    setup_log(&s);

    ck_assert_int_ne(echoscu(s.port, "BADSCU", NET_AE), 0);
    ck_assert_msg(file_contains(g_log, "Calling AE Title Not Recognized"), "%s", file_text(g_log));
    char err[CXR_ERRLEN] = "";
    ck_assert_int_eq(our_echo(s.port, "BADSCU", NET_AE, err), CXR_ERR_DICOM_NET);
    ck_assert_msg(strstr(err, "calling AE title not recognized"), "%s", err);
    /* known AE from the wrong host */
    ck_assert_int_eq(our_echo(s.port, "HOSTSCU", NET_AE, err), CXR_ERR_DICOM_NET);
    ck_assert_msg(strstr(err, "rejected permanent, service user, no reason given"), "%s", err);
    ck_assert_int_eq(s.assoc_calls, 0);

    ck_assert_msg(echoscu(s.port, "GOODSCU", NET_AE) == 0, "%s", file_text(g_log));
    ck_assert_msg(our_echo(s.port, "NETSCU", NET_AE, err) == CXR_OK, "%s", err);
    ck_assert_msg(our_echo(s.port, "LOCALSCU", NET_AE, err) == CXR_OK, "%s", err);
    struct cxr_dicom_scp_stats st;
    cxr_dicom_scp_get_stats(s.scp, &st);
    ck_assert_uint_eq(st.associations_rejected, 3);
    ck_assert_uint_eq(st.associations_accepted, 3);
    srv_stop(&s);
    srv_cleanup(&s);
}
END_TEST

START_TEST(test_assoc_callback_refuses)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    srv_start(&s, &cfg);
    setup_log(&s);
    s.refuse_assoc = true;
    ck_assert_int_ne(echoscu(s.port, "NETSCU", NET_AE), 0);
    ck_assert_msg(file_contains(g_log, "Rejected Transient"), "%s", file_text(g_log));
    char err[CXR_ERRLEN] = "";
    ck_assert_int_eq(our_echo(s.port, "NETSCU", NET_AE, err), CXR_ERR_DICOM_NET);
    ck_assert_msg(
        strstr(err, "rejected transient, service provider (presentation), temporary congestion"),
        "%s", err);
    ck_assert_int_eq(s.assoc_calls, 2);
    s.refuse_assoc = false;
    ck_assert_msg(our_echo(s.port, "NETSCU", NET_AE, err) == CXR_OK, "%s", err);
    srv_stop(&s);
    srv_cleanup(&s);
}
END_TEST

START_TEST(test_presentation_contexts)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    srv_start(&s, &cfg);
    /* a known non-storage class (Study Root C-FIND): nothing acceptable */
    int fd = raw_connect(s.port);
    ck_assert_int_eq(raw_associate(fd, "RAWSCU", NET_AE, "1.2.840.10008.5.1.4.1.2.2.1"), 3);
    close(fd);
    /* a private (unknown) SOP class is taken as storage */
    fd = raw_connect(s.port);
    ck_assert_int_eq(raw_associate(fd, "RAWSCU", NET_AE, "1.2.826.0.1.3680043.10.99.1"), 2);
    close(fd);
    /* a standard storage class */
    fd = raw_connect(s.port);
    ck_assert_int_eq(raw_associate(fd, "RAWSCU", NET_AE, "1.2.840.10008.5.1.4.1.1.1.1"), 2);
    close(fd);
    srv_stop(&s);
    srv_cleanup(&s);
}
END_TEST

/* ---- C-STORE -------------------------------------------------------------- */

/* Sends every corpus file with storescu (proposing the file's own syntax)
 * to our SCP and to DCMTK's storescp in bit-preserving mode; the data set
 * our callback gets must equal, byte for byte, what storescp wrote, and
 * for the files generated here also the original (DCMTK resends them
 * unchanged). */
/* Every corpus file sent by storescu arrives with the data set storescp +B
 * writes, byte for byte; memory_max: objects up to that size come as bytes
 * (0: always a temp file). */
static void store_bit_preserving(uint64_t memory_max)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    cfg.memory_max_bytes = memory_max;
    srv_start(&s, &cfg);
    setup_log(&s);
    char cdir[PATH_MAX], ref[PATH_MAX];
    pathf(cdir, sizeof cdir, "%s/corpus", s.dir);
    pathf(ref, sizeof ref, "%s/ref", s.dir);
    mkdir(cdir, 0700);
    mkdir(ref, 0700);
    static struct corpus_file files[64];
    int n = corpus_build(cdir, files, 64, true);
    ck_assert_int_ge(n, 12);

    uint16_t rport = free_port();
    char rlog[PATH_MAX];
    pathf(rlog, sizeof rlog, "%s/storescp.log", s.dir);
    pid_t ref_pid = spawn(rlog, "exec storescp -aet REF +xa +B -od '%s' %u", ref, rport);
    ck_assert_msg(wait_peer("REF", rport, NULL), "storescp did not start: %s", file_text(rlog));

    int sent = 0;
    for (int i = 0; i < n; i++) {
        const char *flag = storescu_flag(files[i].ts);
        if (!flag)
            continue; /* storescu cannot propose it (.57): see the SCU suite */
        ck_assert_msg(run_logged(g_log, "storescu -aet NETSCU -aec %s -R %s 127.0.0.1 %u '%s'",
                                 NET_AE, flag, s.port, files[i].path) == 0,
                      "storescu %s %s: %s", flag, files[i].path, file_text(g_log));
        ck_assert_msg(run_logged(g_log, "storescu -aet NETSCU -aec REF -R %s 127.0.0.1 %u '%s'",
                                 flag, rport, files[i].path) == 0,
                      "storescu to storescp %s: %s", files[i].path, file_text(g_log));
        sent++;
    }
    ck_assert_int_eq(srv_events(&s), sent);

    /* index storescp's files by SOP Instance UID */
    for (int i = 0; i < n; i++) {
        if (!storescu_flag(files[i].ts))
            continue;
        struct rx_event *e = NULL;
        for (int k = 0; k < s.n_events; k++)
            if (!strcmp(s.ev[k].sop_instance, files[i].uid))
                e = &s.ev[k];
        ck_assert_msg(e != NULL, "no callback for %s", files[i].path);
        ck_assert_str_eq(e->calling, "NETSCU");
        ck_assert_str_eq(e->called, NET_AE);
        ck_assert_str_eq(e->host, "127.0.0.1");
        ck_assert_msg(e->size != UINT64_MAX, "event size differs from the temp file");
        ck_assert_msg(e->kept[0], "file for %s not kept", files[i].path);
        if (files[i].ts[0])
            ck_assert_msg(!strcmp(e->ts, files[i].ts),
                          "%s: received in %s, sent in %s (transcoded?)", files[i].path, e->ts,
                          files[i].ts);
        char inst[65], ts[65];
        size_t off;
        ck_assert(part10_meta(e->kept, &off, inst, ts));
        ck_assert_str_eq(inst, files[i].uid);
        ck_assert_str_eq(ts, e->ts);
        char refpath[PATH_MAX];
        find_by_uid(ref, files[i].uid, refpath);
        ck_assert_msg(refpath[0], "storescp has no file for %s", files[i].uid);
        ck_assert_msg(same_dataset(e->kept, refpath), "%s: our data set differs from storescp +B",
                      files[i].path);
        /* storescu re-deflates a deflated data set: only storescp's copy
         * tells what went over the wire there */
        if (files[i].generated && strcmp(files[i].ts, "1.2.840.10008.1.2.1.99") != 0)
            ck_assert_msg(same_dataset(e->kept, files[i].path),
                          "%s: data set differs from the file", files[i].path);
    }
    ck_assert_int_eq(dir_count(s.tmp), 0);
    struct cxr_dicom_scp_stats st;
    cxr_dicom_scp_get_stats(s.scp, &st);
    ck_assert_uint_eq(st.stores_ok, (uint64_t)sent);
    ck_assert_uint_eq(st.stores_failed, 0);
    /* the form follows the size: bytes up to memory_max, a file beyond */
    int in_memory = 0, as_file = 0;
    for (int k = 0; k < s.n_events; k++) {
        ck_assert_msg(s.ev[k].in_memory == (s.ev[k].size <= memory_max),
                      "%s (%" PRIu64 " bytes) came %s with memory_max %" PRIu64,
                      s.ev[k].sop_instance, s.ev[k].size,
                      s.ev[k].in_memory ? "in memory" : "as a file", memory_max);
        s.ev[k].in_memory ? in_memory++ : as_file++;
    }
    if (memory_max)
        ck_assert_msg(in_memory > 0 && as_file > 0,
                      "memory_max %" PRIu64 ": %d in memory, %d as files", memory_max, in_memory,
                      as_file);
    kill(ref_pid, SIGTERM);
    wait_child(ref_pid);
    srv_stop(&s);
    srv_cleanup(&s);
}

START_TEST(test_store_bit_preserving) { store_bit_preserving(0); }
END_TEST

/* Small objects in memory, larger ones spilled to a temp file mid-stream:
 * the same bytes either way. */
START_TEST(test_store_bit_preserving_in_memory) { store_bit_preserving(64 * 1024); }
END_TEST

/* Several storescu at once under the cap: every instance arrives. */
START_TEST(test_store_concurrent)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    cfg.max_associations = 4;
    srv_start(&s, &cfg);
    setup_log(&s);
    enum { PEERS = 4, FILES = 5 };
    pid_t pids[PEERS];
    for (int p = 0; p < PEERS; p++) {
        char list[PEERS * FILES * (PATH_MAX + 4)] = "";
        for (int f = 0; f < FILES; f++) {
            char path[PATH_MAX];
            pathf(path, sizeof path, "%s/c%d_%d.dcm", s.dir, p, f);
            write_cr(path, 256, 256, 16, NULL);
            strcat(list, " '");
            strcat(list, path);
            strcat(list, "'");
        }
        char log[PATH_MAX];
        pathf(log, sizeof log, "%s/peer%d.log", s.dir, p);
        pids[p] =
            spawn(log, "storescu -aet PEER%d -aec %s 127.0.0.1 %u%s", p, NET_AE, s.port, list);
    }
    for (int p = 0; p < PEERS; p++) {
        char log[PATH_MAX];
        pathf(log, sizeof log, "%s/peer%d.log", s.dir, p);
        ck_assert_msg(wait_child(pids[p]) == 0, "peer %d: %s", p, file_text(log));
    }
    ck_assert_int_eq(srv_events(&s), PEERS * FILES);
    ck_assert_int_eq(dir_count(s.rx), PEERS * FILES);
    ck_assert_int_eq(dir_count(s.tmp), 0);
    srv_stop(&s);
    srv_cleanup(&s);
}
END_TEST

/* max_associations busy: the next peer is rejected transient, "local limit
 * exceeded"; the running ones finish normally. */
START_TEST(test_association_cap)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    cfg.max_associations = 2;
    srv_start(&s, &cfg);
    setup_log(&s);
    srv_set_block(&s, true);
    pid_t pids[2];
    for (int p = 0; p < 2; p++) {
        char path[PATH_MAX], log[PATH_MAX];
        pathf(path, sizeof path, "%s/cap%d.dcm", s.dir, p);
        write_cr(path, 64, 64, 16, NULL);
        pathf(log, sizeof log, "%s/cap%d.log", s.dir, p);
        pids[p] =
            spawn(log, "storescu -aet CAP%d -aec %s 127.0.0.1 %u '%s'", p, NET_AE, s.port, path);
    }
    ck_assert_msg(srv_wait_in_callback(&s, 2), "two stores never ran at once");
    struct cxr_dicom_scp_stats st;
    cxr_dicom_scp_get_stats(s.scp, &st);
    ck_assert_uint_eq(st.active_associations, 2);
    ck_assert_int_ne(echoscu(s.port, "THIRD", NET_AE), 0);
    ck_assert_msg(file_contains(g_log, "Local Limit Exceeded") &&
                      file_contains(g_log, "Rejected Transient"),
                  "%s", file_text(g_log));
    char err[CXR_ERRLEN] = "";
    ck_assert_int_eq(our_echo(s.port, "THIRD", NET_AE, err), CXR_ERR_DICOM_NET);
    ck_assert_msg(
        strstr(err, "rejected transient, service provider (presentation), local limit exceeded"),
        "%s", err);
    srv_set_block(&s, false);
    for (int p = 0; p < 2; p++)
        ck_assert_int_eq(wait_child(pids[p]), 0);
    ck_assert_msg(our_echo(s.port, "THIRD", NET_AE, err) == CXR_OK, "%s", err);
    ck_assert_int_eq(srv_events(&s), 2);
    srv_stop(&s);
    srv_cleanup(&s);
}
END_TEST

/* The store callback answers 0xA700: storescu sees the refusal, the temp
 * file is gone. */
START_TEST(test_callback_refusal)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    srv_start(&s, &cfg);
    setup_log(&s);
    s.answer = CXR_DIMSE_OUT_OF_RESOURCES;
    char path[PATH_MAX];
    pathf(path, sizeof path, "%s/refused.dcm", s.dir);
    write_cr(path, 128, 128, 16, NULL);
    ck_assert_int_ne(run_logged(g_log, "storescu -v -aet NETSCU -aec %s 127.0.0.1 %u '%s'", NET_AE,
                                s.port, path),
                     0);
    ck_assert_msg(file_contains(g_log, "Refused: OutOfResources"), "%s", file_text(g_log));
    ck_assert_int_eq(srv_events(&s), 1);
    ck_assert_int_eq(dir_count(s.tmp), 0);
    ck_assert_int_eq(dir_count(s.rx), 0);
    struct cxr_dicom_scp_stats st;
    cxr_dicom_scp_get_stats(s.scp, &st);
    ck_assert_uint_eq(st.stores_failed, 1);
    ck_assert_uint_eq(st.stores_ok, 0);
    srv_stop(&s);
    srv_cleanup(&s);
}
END_TEST

/* One association sends a big file that cannot be written, then a small
 * one: the big one gets 0xA700 and leaves nothing, the small one is stored
 * (the association survived the failed write). */
struct wf_files {
    char big[PATH_MAX], small[PATH_MAX], small_uid[65];
};

static void write_failure_files(struct srv *s, struct wf_files *f)
{
    pathf(f->big, sizeof f->big, "%s/big.dcm", s->dir);
    pathf(f->small, sizeof f->small, "%s/small.dcm", s->dir);
    write_cr(f->big, 512, 512, 16, NULL);
    write_cr(f->small, 32, 32, 16, f->small_uid);
}

static void check_write_failure(struct srv *s, const struct wf_files *f, const char *tmpdir)
{
    /* -nh: go on after the refusal (storescu then exits 0) */
    run_logged(g_log, "storescu -v -nh -aet NETSCU -aec %s 127.0.0.1 %u '%s' '%s'", NET_AE, s->port,
               f->big, f->small);
    ck_assert_msg(file_contains(g_log, "Refused: OutOfResources"), "%s", file_text(g_log));
    ck_assert_int_eq(srv_events(s), 1);
    ck_assert_str_eq(s->ev[0].sop_instance, f->small_uid);
    ck_assert_int_eq(dir_count(tmpdir), 0);
    struct cxr_dicom_scp_stats st;
    cxr_dicom_scp_get_stats(s->scp, &st);
    ck_assert_uint_eq(st.stores_failed, 1);
    ck_assert_uint_eq(st.stores_ok, 1);
    char err[CXR_ERRLEN];
    ck_assert_msg(our_echo(s->port, "NETSCU", NET_AE, err) == CXR_OK, "%s", err);
}

START_TEST(test_disk_full_tmpfs)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    char mnt[PATH_MAX];
    pathf(mnt, sizeof mnt, "%s/small-fs", s.dir);
    mkdir(mnt, 0700);
    /* A private mount namespace for this (forked, still single-threaded)
     * test process: the tmpfs disappears with it even if an assertion
     * ends the test before the umount. */
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", mnt, "tmpfs", 0, "size=128k") != 0) {
        printf(
            "SKIP disk-full on tmpfs: cannot mount a tmpfs here (%s); the RLIMIT_FSIZE test covers "
            "the write failure\n",
            strerror(errno));
        srv_cleanup(&s);
        return;
    }
    cfg.spool_tmp_dir = mnt;
    s.keep = false; /* rx/ is on another file system */
    srv_start(&s, &cfg);
    setup_log(&s);
    struct wf_files f;
    write_failure_files(&s, &f);
    check_write_failure(&s, &f, mnt);
    srv_stop(&s);
    umount(mnt);
    srv_cleanup(&s);
}
END_TEST

START_TEST(test_disk_full_rlimit)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    srv_start(&s, &cfg);
    setup_log(&s);
    /* Files may not grow past 100 KB in this (forked) test process: the
     * write(2) of the big object fails with EFBIG half-way; the library
     * ignores SIGXFSZ so that this is an error, not a crash. */
    struct wf_files f;
    write_failure_files(&s, &f);
    struct rlimit rl = {100 * 1024, 100 * 1024};
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    check_write_failure(&s, &f, s.tmp);
    srv_stop(&s);
    srv_cleanup(&s);
}
END_TEST

START_TEST(test_spool_missing)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    char gone[PATH_MAX];
    pathf(gone, sizeof gone, "%s/not-there", s.dir);
    cfg.spool_tmp_dir = gone;
    srv_start(&s, &cfg);
    setup_log(&s);
    char path[PATH_MAX];
    pathf(path, sizeof path, "%s/one.dcm", s.dir);
    write_cr(path, 64, 64, 16, NULL);
    ck_assert_int_ne(run_logged(g_log, "storescu -v -aet NETSCU -aec %s 127.0.0.1 %u '%s'", NET_AE,
                                s.port, path),
                     0);
    ck_assert_msg(file_contains(g_log, "Refused: OutOfResources"), "%s", file_text(g_log));
    ck_assert_int_eq(srv_events(&s), 0);
    ck_assert_msg(echoscu(s.port, "NETSCU", NET_AE) == 0, "%s", file_text(g_log));
    srv_stop(&s);
    srv_cleanup(&s);
}
END_TEST

/* ---- malformed input ------------------------------------------------------ */

START_TEST(test_garbage_keeps_serving)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    cfg.acse_timeout_s = 3;
    srv_start(&s, &cfg);
    setup_log(&s);
    uint8_t junk[4096];
    srand(42);
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)rand();
    junk[0] = 0x07; /* not an A-ASSOCIATE-RQ */
    int fd = raw_connect(s.port);
    raw_send(fd, junk, sizeof junk);
    close(fd);
    /* an A-ASSOCIATE-RQ header announcing 2 GB */
    uint8_t huge[6] = {0x01, 0, 0x7F, 0xFF, 0xFF, 0xFF};
    fd = raw_connect(s.port);
    raw_send(fd, huge, sizeof huge);
    raw_send(fd, junk, 512);
    close(fd);
    /* connect and leave at once */
    fd = raw_connect(s.port);
    close(fd);
    /* an RQ cut in the middle */
    fd = raw_connect(s.port);
    uint8_t cut[20] = {0x01, 0, 0, 0, 0, 200, 0, 1, 0, 0, 'C', 'X', 'R'};
    raw_send(fd, cut, sizeof cut);
    close(fd);
    ck_assert_msg(echoscu(s.port, "NETSCU", NET_AE) == 0, "%s", file_text(g_log));
    /* each broken connection is dropped or rejected, none accepted; they
     * end on their own threads, maybe after the echo */
    struct cxr_dicom_scp_stats st;
    for (int i = 0; i < 400; i++) {
        cxr_dicom_scp_get_stats(s.scp, &st);
        if (st.associations_failed + st.associations_rejected >= 4)
            break;
        usleep(50 * 1000);
    }
    ck_assert_uint_eq(st.associations_failed + st.associations_rejected, 4);
    ck_assert_uint_eq(st.associations_accepted, 1);
    srv_stop(&s);
    srv_cleanup(&s);
}
END_TEST

START_TEST(test_truncated_store)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    srv_start(&s, &cfg);
    setup_log(&s);
    int fd = raw_connect(s.port);
    ck_assert_int_eq(raw_associate(fd, "RAWSCU", NET_AE, "1.2.840.10008.5.1.4.1.1.1"), 2);
    raw_truncated_store(fd, "1.2.840.10008.5.1.4.1.1.1", "1.2.826.0.1.3680043.10.3.1", 200 * 1024);
    close(fd);
    struct cxr_dicom_scp_stats st;
    for (int i = 0; i < 200; i++) {
        cxr_dicom_scp_get_stats(s.scp, &st);
        if (st.stores_failed == 1 && st.active_associations == 0)
            break;
        usleep(50 * 1000);
    }
    ck_assert_uint_eq(st.stores_failed, 1);
    ck_assert_int_eq(srv_events(&s), 0);
    ck_assert_int_eq(dir_count(s.tmp), 0);
    ck_assert_msg(echoscu(s.port, "NETSCU", NET_AE) == 0, "%s", file_text(g_log));
    srv_stop(&s);
    srv_cleanup(&s);
}
END_TEST

/* ---- life cycle ------------------------------------------------------------ */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- connections that do not negotiate (before any authentication) ------- */

/* A connection from source address `from` (any 127.x.y.z is local). */
static int connect_from(const char *from, uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = 0};
    inet_pton(AF_INET, from, &src.sin_addr);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&src, sizeof src), 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    return fd;
}

/* Whether the SCP has closed `fd` (end of stream or reset), waiting up to
 * `wait_ms` for it. */
static bool closed_by_peer(int fd, int wait_ms)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    if (poll(&pfd, 1, wait_ms) <= 0)
        return false;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

/* The first 8 of the 206 bytes of an A-ASSOCIATE-RQ. */
static const uint8_t partial_rq[8] = {0x01, 0, 0, 0, 0, 200, 0, 1};

/* Held-open connections (silent, or stopped in the middle of their request)
 * do not delay other peers: the listener only accepts, each connection
 * negotiates on its own thread. With a 60 s ACSE timeout, a listener that
 * reads requests in turn would keep echoscu (5 s) waiting for 6 minutes. */
START_TEST(test_held_connections_do_not_block)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    cfg.acse_timeout_s = 60;
    srv_start(&s, &cfg);
    setup_log(&s);
    int held[6]; /* under the per-address cap (max_associations, 8) */
    for (int i = 0; i < 6; i++) {
        held[i] = raw_connect(s.port);
        if (i % 2)
            raw_send(held[i], partial_rq, sizeof partial_rq);
    }
    ck_assert_msg(run_logged(g_log, "echoscu -to 5 -ta 5 -aet NETSCU -aec %s 127.0.0.1 %u", NET_AE,
                             s.port) == 0,
                  "C-ECHO with 6 connections held open: %s", file_text(g_log));
    char err[CXR_ERRLEN];
    ck_assert_msg(our_echo(s.port, "NETSCU", NET_AE, err) == CXR_OK, "%s", err);
    for (int i = 0; i < 6; i++)
        ck_assert_msg(!closed_by_peer(held[i], 0), "held connection %d was closed", i);
    /* stop closes connections still negotiating at once (not after 60 s) */
    double t0 = now_s();
    srv_stop(&s);
    ck_assert_msg(now_s() - t0 < 30, "stop took %.1f s with 6 connections negotiating",
                  now_s() - t0);
    for (int i = 0; i < 6; i++) {
        ck_assert(closed_by_peer(held[i], 10000));
        close(held[i]);
    }
    srv_cleanup(&s);
}
END_TEST

/* acse_timeout_s bounds the whole negotiation, not each read: a request
 * that trickles in one byte per 100 ms (about 12 s for all of it) is cut
 * off at the 2 s deadline. */
START_TEST(test_negotiation_deadline)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    cfg.acse_timeout_s = 2;
    srv_start(&s, &cfg);
    setup_log(&s);
    static struct pdu rq;
    rq_minimal(&rq, "TRICKLE", NET_AE);
    int fd = raw_connect(s.port);
    size_t sent = 0;
    bool closed = false;
    while (sent < rq.n && !(closed = closed_by_peer(fd, 100))) {
        if (send(fd, rq.b + sent, 1, MSG_NOSIGNAL) != 1) {
            closed = true;
            break;
        }
        sent++;
    }
    ck_assert_msg(closed && sent < rq.n,
                  "a request trickling in was not cut off by the 2 s deadline (%zu of %zu bytes "
                  "sent)",
                  sent, rq.n);
    close(fd);
    ck_assert_msg(echoscu(s.port, "NETSCU", NET_AE) == 0, "%s", file_text(g_log));
    struct cxr_dicom_scp_stats st;
    cxr_dicom_scp_get_stats(s.scp, &st);
    ck_assert_uint_eq(st.associations_failed, 1);
    srv_stop(&s);
    srv_cleanup(&s);
}
END_TEST

/* The negotiation caps close the oldest connection still negotiating: of
 * the same address when it is at its cap, else of the address with the
 * most. Peers on 127.0.0.2-4 (all loopback). */
START_TEST(test_negotiation_caps_close_oldest)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    cfg.acse_timeout_s = 60;
    cfg.max_negotiations_per_peer = 2;
    cfg.max_negotiations = 3;
    srv_start(&s, &cfg);
    setup_log(&s);
    int a1 = connect_from("127.0.0.2", s.port);
    int a2 = connect_from("127.0.0.2", s.port);
    int a3 = connect_from("127.0.0.2", s.port); /* over the per-address cap */
    ck_assert_msg(closed_by_peer(a1, 20000), "the oldest of 3 from one address is still open");
    int b1 = connect_from("127.0.0.3", s.port);
    int c1 = connect_from("127.0.0.4", s.port); /* over the total cap */
    ck_assert_msg(closed_by_peer(a2, 20000), "the oldest of the busiest address is still open");
    ck_assert(!closed_by_peer(a3, 0));
    ck_assert(!closed_by_peer(b1, 0));
    ck_assert(!closed_by_peer(c1, 0));
    /* a peer that sends its request at once gets through the full caps */
    ck_assert_msg(echoscu(s.port, "NETSCU", NET_AE) == 0, "%s", file_text(g_log));
    int fds[] = {a1, a2, a3, b1, c1};
    for (size_t i = 0; i < 5; i++)
        close(fds[i]);
    srv_stop(&s);
    srv_cleanup(&s);
}
END_TEST

/* Request shapes DCMTK 3.6.7 leaks memory on (issue 14: 272 B, 32 B and
 * 56 B per connection) and two more: each is answered with an A-ABORT
 * (source service-provider, reason invalid-PDU-parameter-value) before
 * DCMTK parses it, so `make test-asan` (LeakSanitizer) finds nothing. A
 * well-formed request with every optional item is still accepted. */
static void rq_start(struct pdu *p)
{
    rq_begin(p, "NETSCU", NET_AE);
    rq_app_context(p);
}

static void rq_user_info_with(struct pdu *p, int shape)
{
    size_t ui = pdu_open(p, 0x50);
    rq_user_basics(p);
    if (shape == 1) { /* extended negotiation whose UID length overruns it */
        size_t at = pdu_open(p, 0x56);
        pdu_be16(p, 200);
        pdu_put(p, "1.2.840.10008.5.1.4.1.1.1", 25);
        pdu_close(p, at);
    }
    for (int i = 0; i < (shape == 2 ? 2 : shape == 3 ? 1 : 0); i++) { /* user identity */
        size_t at = pdu_open(p, 0x58);
        pdu_u8(p, 2);
        pdu_u8(p, 0);
        pdu_be16(p, 4);
        pdu_put(p, "user", 4);
        pdu_be16(p, 6);
        pdu_put(p, "secret", 6);
        pdu_close(p, at);
    }
    if (shape == 3) { /* well-formed extras: role selection, extended negotiation */
        size_t at = pdu_open(p, 0x54);
        pdu_be16(p, 25);
        pdu_put(p, "1.2.840.10008.5.1.4.1.1.1", 25);
        pdu_u8(p, 1);
        pdu_u8(p, 0);
        pdu_close(p, at);
        at = pdu_open(p, 0x56);
        pdu_be16(p, 25);
        pdu_put(p, "1.2.840.10008.5.1.4.1.1.1", 25);
        pdu_put(p, "\1\0", 2);
        pdu_close(p, at);
    }
    pdu_close(p, ui);
}

START_TEST(test_malformed_requests_refused)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    srv_start(&s, &cfg);
    setup_log(&s);
    static struct pdu rq;
    const char *shapes[] = {"context without transfer syntax", "abstract syntax of 65527 bytes",
                            "extended negotiation UID overruns its sub-item",
                            "two user identity sub-items", "two user information items"};
    for (int k = 0; k < 5; k++) {
        rq_start(&rq);
        size_t at = pdu_open(&rq, 0x20);
        uint8_t h[4] = {1, 0, 0, 0};
        pdu_put(&rq, h, 4);
        if (k == 1)
            pdu_fill(&rq, 0x30, 0xFFFF - 8);
        else
            pdu_text(&rq, 0x30, "1.2.840.10008.1.1");
        if (k != 0 && k != 1)
            pdu_text(&rq, 0x40, "1.2.840.10008.1.2");
        pdu_close(&rq, at);
        rq_user_info_with(&rq, k == 2 ? 1 : k == 3 ? 2 : 0);
        if (k == 4)
            rq_user_info_with(&rq, 0);
        rq_end(&rq);
        for (int rep = 0; rep < 20; rep++) {
            int fd = raw_connect(s.port);
            raw_send(fd, rq.b, rq.n);
            uint8_t abort_fields[4];
            int type = raw_read_pdu(fd, abort_fields);
            close(fd);
            ck_assert_msg(type == 0x07 && abort_fields[2] == 2 && abort_fields[3] == 6,
                          "%s: answered with PDU type 0x%02X (source %u, reason %u), want "
                          "A-ABORT (0x07, source 2, reason 6)",
                          shapes[k], (unsigned)type, abort_fields[2], abort_fields[3]);
        }
    }
    rq_start(&rq);
    rq_context(&rq, 1, "1.2.840.10008.1.1", "1.2.840.10008.1.2");
    rq_user_info_with(&rq, 3);
    rq_end(&rq);
    int fd = raw_connect(s.port);
    raw_send(fd, rq.b, rq.n);
    ck_assert_msg(raw_read_pdu(fd, NULL) == 0x02,
                  "a well-formed request with user identity, role selection and extended "
                  "negotiation was not accepted");
    close(fd);
    ck_assert_msg(echoscu(s.port, "NETSCU", NET_AE) == 0, "%s", file_text(g_log));
    struct cxr_dicom_scp_stats st;
    cxr_dicom_scp_get_stats(s.scp, &st);
    ck_assert_uint_eq(st.associations_failed, 100);
    srv_stop(&s);
    srv_cleanup(&s);
}
END_TEST

/* An association idle between commands is closed by stop at once, not
 * after the DIMSE timeout (here 20 s; the bound below only catches a hang). */
START_TEST(test_stop_closes_idle_association)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    cfg.dimse_timeout_s = 60;
    srv_start(&s, &cfg);
    int fd = raw_connect(s.port);
    ck_assert_int_eq(raw_associate(fd, "IDLESCU", NET_AE, "1.2.840.10008.5.1.4.1.1.1"), 2);
    struct cxr_dicom_scp_stats st;
    cxr_dicom_scp_get_stats(s.scp, &st);
    ck_assert_uint_eq(st.active_associations, 1);
    double t0 = now_s();
    srv_stop(&s);
    ck_assert_msg(now_s() - t0 < 30.0, "stop waited for the idle association");
    char buf[64];
    ssize_t n;
    while ((n = recv(fd, buf, sizeof buf, 0)) > 0) /* an A-ABORT may come first */
        ;
    ck_assert_int_eq(n, 0);
    close(fd);
    srv_cleanup(&s);
}
END_TEST

static void *stop_later(void *arg)
{
    cxr_dicom_scp_stop(arg);
    return NULL;
}

/* stop while a C-STORE is in the store callback: that C-STORE is answered
 * (storescu reports it stored), the association then ends, run returns. */
START_TEST(test_stop_finishes_store_in_flight)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    srv_start(&s, &cfg);
    setup_log(&s);
    char a[PATH_MAX], b[PATH_MAX], a_uid[65];
    pathf(a, sizeof a, "%s/first.dcm", s.dir);
    pathf(b, sizeof b, "%s/second.dcm", s.dir);
    write_cr(a, 64, 64, 16, a_uid);
    write_cr(b, 64, 64, 16, NULL);
    srv_set_block(&s, true);
    pid_t pid =
        spawn(g_log, "storescu -aet NETSCU -aec %s 127.0.0.1 %u '%s' '%s'", NET_AE, s.port, a, b);
    ck_assert(srv_wait_in_callback(&s, 1));
    pthread_t th;
    pthread_create(&th, NULL, stop_later, s.scp); /* stop from another thread */
    pthread_join(th, NULL);
    usleep(300 * 1000);
    ck_assert_int_eq(pthread_tryjoin_np(s.thread, NULL), EBUSY); /* waits for the store */
    srv_set_block(&s, false);
    pthread_join(s.thread, NULL);
    ck_assert_int_eq(s.run_status, CXR_OK);
    wait_child(pid);
    ck_assert_int_eq(srv_events(&s), 1);
    ck_assert_str_eq(s.ev[0].sop_instance, a_uid);
    ck_assert_msg(s.ev[0].kept[0] && access(s.ev[0].kept, F_OK) == 0, "first object not kept");
    ck_assert_int_eq(dir_count(s.tmp), 0);
    cxr_dicom_scp_free(s.scp);
    srv_cleanup(&s);
}
END_TEST

START_TEST(test_port_in_use)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    srv_start(&s, &cfg);
    cfg.port = s.port;
    struct cxr_dicom_scp *second = NULL;
    char err[CXR_ERRLEN] = "";
    ck_assert_int_eq(cxr_dicom_scp_new(&cfg, srv_store_cb, NULL, &s, &second, err), CXR_OK);
    ck_assert_int_eq(cxr_dicom_scp_run(second, err), CXR_ERR_DICOM_NET);
    char port[16];
    pathf(port, sizeof port, "%u", s.port);
    ck_assert_msg(strstr(err, port) && strstr(err, "in use"), "%s", err);
    ck_assert_int_eq(cxr_dicom_scp_wait_ready(second, 0), 0);
    /* run may be called once */
    ck_assert_int_eq(cxr_dicom_scp_run(second, err), CXR_ERR_INVALID_ARG);
    cxr_dicom_scp_free(second);
    srv_stop(&s);
    srv_cleanup(&s);
}
END_TEST

START_TEST(test_config_checked)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    struct cxr_dicom_scp *scp = (struct cxr_dicom_scp *)&s; /* must come back NULL */
    char err[CXR_ERRLEN];

    struct cxr_dicom_scp_config bad = cfg;
    bad.ae_title = "SEVENTEEN_CHARS_X";
    ck_assert_int_eq(cxr_dicom_scp_new(&bad, srv_store_cb, NULL, &s, &scp, err),
                     CXR_ERR_INVALID_ARG);
    ck_assert_ptr_null(scp);
    ck_assert_msg(strstr(err, "SEVENTEEN_CHARS_X"), "%s", err);
    bad = cfg;
    bad.bind_address = "::1";
    ck_assert_int_eq(cxr_dicom_scp_new(&bad, srv_store_cb, NULL, &s, &scp, err),
                     CXR_ERR_INVALID_ARG);
    bad = cfg;
    bad.max_pdu = 1000;
    ck_assert_int_eq(cxr_dicom_scp_new(&bad, srv_store_cb, NULL, &s, &scp, err),
                     CXR_ERR_INVALID_ARG);
    bad = cfg;
    bad.spool_tmp_dir = NULL;
    ck_assert_int_eq(cxr_dicom_scp_new(&bad, srv_store_cb, NULL, &s, &scp, err),
                     CXR_ERR_INVALID_ARG);
    ck_assert_int_eq(cxr_dicom_scp_new(&cfg, NULL, NULL, &s, &scp, err), CXR_ERR_INVALID_ARG);
    struct cxr_dicom_peer_rule rule;
    memset(&rule, 0, sizeof rule);
    pathf(rule.host, sizeof rule.host, "10.0.0.0/33");
    bad = cfg;
    bad.allowed_peers = &rule;
    bad.allowed_peer_count = 1;
    ck_assert_int_eq(cxr_dicom_scp_new(&bad, srv_store_cb, NULL, &s, &scp, err),
                     CXR_ERR_INVALID_ARG);
    ck_assert_msg(strstr(err, "10.0.0.0/33"), "%s", err);
    bad = cfg;
    bad.tls.enabled = true;
    ck_assert_int_eq(cxr_dicom_scp_new(&bad, srv_store_cb, NULL, &s, &scp, err),
                     CXR_ERR_INVALID_ARG);
    bad.tls.certificate = "/nonexistent/cert.pem";
    bad.tls.private_key = "/nonexistent/key.pem";
    ck_assert_int_eq(cxr_dicom_scp_new(&bad, srv_store_cb, NULL, &s, &scp, err), CXR_ERR_IO);
    ck_assert_msg(strstr(err, "/nonexistent/"), "%s", err);
    ck_assert_ptr_null(scp);
    cxr_dicom_scp_free(NULL);
    cxr_dicom_scp_stop(NULL);
    srv_cleanup(&s);
}
END_TEST

/* TCP_NODELAY of the SCP's end of the connection whose client end is
 * `client_fd` (the SCP runs in this process: find its socket in
 * /proc/self/fd); -1 if not found. */
static int server_side_nodelay(uint16_t scp_port, int client_fd)
{
    struct sockaddr_in cl;
    socklen_t len = sizeof cl;
    ck_assert_int_eq(getsockname(client_fd, (struct sockaddr *)&cl, &len), 0);
    int result = -1;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d && (e = readdir(d)) && result < 0) {
        int fd = atoi(e->d_name);
        struct sockaddr_in a, b;
        socklen_t la = sizeof a, lb = sizeof b;
        if (fd == client_fd || getsockname(fd, (struct sockaddr *)&a, &la) != 0 ||
            a.sin_family != AF_INET || ntohs(a.sin_port) != scp_port ||
            getpeername(fd, (struct sockaddr *)&b, &lb) != 0 || b.sin_port != cl.sin_port)
            continue;
        int v = 0;
        socklen_t lv = sizeof v;
        if (getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &lv) == 0)
            result = v != 0;
    }
    if (d)
        closedir(d);
    return result;
}

/* Nagle's algorithm is off on association sockets (DCMTK leaves it on
 * unless TCP_NODELAY is in the environment, costing ~3x on loopback). */
START_TEST(test_tcp_nodelay_on)
{
    struct srv s;
    struct cxr_dicom_scp_config cfg = srv_config(&s);
    unsetenv("TCP_NODELAY");
    srv_start(&s, &cfg);
    int fd = raw_connect(s.port);
    ck_assert_int_eq(raw_associate(fd, "RAWSCU", NET_AE, "1.2.840.10008.5.1.4.1.1.1"), 2);
    ck_assert_int_eq(server_side_nodelay(s.port, fd), 1);
    close(fd);
    srv_stop(&s);
    srv_cleanup(&s);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("dicom_net");
    TCase *tc = tcase_create("policy");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_echo_accepted);
    tcase_add_test(tc, test_called_ae_rejected);
    tcase_add_test(tc, test_allowlist);
    tcase_add_test(tc, test_assoc_callback_refuses);
    tcase_add_test(tc, test_presentation_contexts);
    tcase_add_test(tc, test_tcp_nodelay_on);
    suite_add_tcase(s, tc);
    tc = tcase_create("store");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_store_bit_preserving);
    tcase_add_test(tc, test_store_bit_preserving_in_memory);
    tcase_add_test(tc, test_store_concurrent);
    tcase_add_test(tc, test_association_cap);
    tcase_add_test(tc, test_callback_refusal);
    tcase_add_test(tc, test_disk_full_tmpfs);
    tcase_add_test(tc, test_disk_full_rlimit);
    tcase_add_test(tc, test_spool_missing);
    suite_add_tcase(s, tc);
    tc = tcase_create("robustness");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_garbage_keeps_serving);
    tcase_add_test(tc, test_truncated_store);
    tcase_add_test(tc, test_held_connections_do_not_block);
    tcase_add_test(tc, test_negotiation_deadline);
    tcase_add_test(tc, test_negotiation_caps_close_oldest);
    tcase_add_test(tc, test_malformed_requests_refused);
    suite_add_tcase(s, tc);
    tc = tcase_create("lifecycle");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_stop_closes_idle_association);
    tcase_add_test(tc, test_stop_finishes_store_in_flight);
    tcase_add_test(tc, test_port_in_use);
    tcase_add_test(tc, test_config_checked);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(suite()); }
