/* dicom_net_fixture.h — helpers shared by the DICOM networking suites
 * (check_dicom_net.c, check_dicom_net_scu.c): our SCP on an ephemeral port in
 * a thread with a recording store callback, DCMTK peers started as child
 * processes, small DICOM files written here and converted to every transfer
 * syntax with DCMTK's tools, Part 10 parsing to compare data sets byte by
 * byte, and a raw socket client for malformed streams. Included once per
 * suite (static functions). */
#ifndef CXR_DICOM_NET_FIXTURE_H
#define CXR_DICOM_NET_FIXTURE_H

#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cxr/dicom_net.h"
#include "test_util.h"

/* Each suite uses a subset of these helpers. */
#define FIXTURE static __attribute__((unused))

#define NET_AE     "CXRTEST"
#define MAX_EVENTS 256

/* snprintf for paths and commands: truncation is not expected (and would
 * only make a test fail), so no format-truncation warning is wanted. */
FIXTURE int pathf(char *out, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
FIXTURE int pathf(char *out, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, len, fmt, ap);
    va_end(ap);
    return n;
}

/* ---- our SCP in a thread ------------------------------------------------ */

struct rx_event {
    char calling[17], called[17], host[64];
    char sop_class[65], sop_instance[65], ts[65];
    char kept[PATH_MAX]; /* where the callback moved the file ("" if not kept) */
    uint64_t size;
    bool in_memory; /* handed over as bytes, not as a temp file */
};

struct srv {
    struct cxr_dicom_scp *scp;
    pthread_t thread;
    uint16_t port;
    char *dir; /* test directory: tmp/ (spool) and rx/ (kept files) */
    char tmp[PATH_MAX], rx[PATH_MAX];
    enum cxr_status run_status;
    char run_err[CXR_ERRLEN];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct rx_event ev[MAX_EVENTS];
    int n_events;
    uint16_t answer; /* status the store callback returns */
    bool keep;       /* rename received files into rx/<uid>.dcm */
    bool block;      /* callbacks wait until block is cleared */
    int in_callback;
    bool refuse_assoc; /* the assoc callback says no */
    int assoc_calls;
};

FIXTURE uint16_t srv_store_cb(void *ctx, const struct cxr_dicom_store_event *ev)
{
    struct srv *s = ctx;
    pthread_mutex_lock(&s->mu);
    s->in_callback++;
    pthread_cond_broadcast(&s->cv);
    while (s->block)
        pthread_cond_wait(&s->cv, &s->mu);
    uint16_t answer = s->answer;
    struct rx_event *e = s->n_events < MAX_EVENTS ? &s->ev[s->n_events++] : NULL;
    if (e) {
        memset(e, 0, sizeof *e);
        pathf(e->calling, sizeof e->calling, "%s", ev->calling_ae);
        pathf(e->called, sizeof e->called, "%s", ev->called_ae);
        pathf(e->host, sizeof e->host, "%s", ev->peer_host);
        pathf(e->sop_class, sizeof e->sop_class, "%s", ev->sop_class_uid);
        pathf(e->sop_instance, sizeof e->sop_instance, "%s", ev->sop_instance_uid);
        pathf(e->ts, sizeof e->ts, "%s", ev->transfer_syntax_uid);
        e->size = ev->size;
        e->in_memory = ev->data != NULL;
        struct stat st;
        /* exactly one of the two forms, of the size announced */
        if ((ev->data != NULL) == (ev->tmp_path != NULL) ||
            (ev->tmp_path && (stat(ev->tmp_path, &st) != 0 || (uint64_t)st.st_size != ev->size)))
            e->size = UINT64_MAX; /* the test asserts on it */
    }
    if (answer == 0 && s->keep && e) {
        pathf(e->kept, sizeof e->kept, "%s/%s.dcm", s->rx, ev->sop_instance_uid);
        if (ev->data) {
            FILE *f = fopen(e->kept, "wb");
            if (!f || fwrite(ev->data, 1, ev->size, f) != ev->size)
                e->kept[0] = '\0';
            if (f)
                fclose(f);
        } else if (rename(ev->tmp_path, e->kept) != 0) {
            e->kept[0] = '\0';
        }
    } else if (answer == 0 && ev->tmp_path) {
        unlink(ev->tmp_path);
    }
    /* on a failure answer the file is left for the SCP to remove */
    s->in_callback--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return answer;
}

FIXTURE bool srv_assoc_cb(void *ctx, const char *calling, const char *host, char *reason)
{
    struct srv *s = ctx;
    pthread_mutex_lock(&s->mu);
    s->assoc_calls++;
    bool refuse = s->refuse_assoc;
    pthread_mutex_unlock(&s->mu);
    if (refuse)
        pathf(reason, 256, "disk below the watermark (test), peer %s at %s", calling, host);
    return !refuse;
}

FIXTURE void *srv_thread(void *arg)
{
    struct srv *s = arg;
    s->run_status = cxr_dicom_scp_run(s->scp, s->run_err);
    return NULL;
}

/* A config with test defaults; the caller may change fields before
 * srv_start. */
FIXTURE struct cxr_dicom_scp_config srv_config(struct srv *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->dir = cxr_test_tmpdir();
    ck_assert_ptr_nonnull(s->dir);
    pathf(s->tmp, sizeof s->tmp, "%s/tmp", s->dir);
    pathf(s->rx, sizeof s->rx, "%s/rx", s->dir);
    mkdir(s->tmp, 0700);
    mkdir(s->rx, 0700);
    s->keep = true;
    struct cxr_dicom_scp_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.ae_title = NET_AE;
    cfg.bind_address = "127.0.0.1";
    cfg.port = 0;
    cfg.max_associations = 8;
    cfg.acse_timeout_s = 10;
    cfg.dimse_timeout_s = 20;
    cfg.check_called_ae = true;
    cfg.spool_tmp_dir = s->tmp;
    return cfg;
}

FIXTURE void srv_start(struct srv *s, const struct cxr_dicom_scp_config *cfg)
{
    char err[CXR_ERRLEN] = "";
    enum cxr_status st = cxr_dicom_scp_new(cfg, srv_store_cb, srv_assoc_cb, s, &s->scp, err);
    ck_assert_msg(st == CXR_OK, "scp_new: %s", err);
    ck_assert_int_eq(pthread_create(&s->thread, NULL, srv_thread, s), 0);
    s->port = cxr_dicom_scp_wait_ready(s->scp, 10000);
    ck_assert_msg(s->port != 0, "SCP not listening: %s", s->run_err);
}

/* Stops the SCP; asserts run returned CXR_OK. */
FIXTURE void srv_stop(struct srv *s)
{
    cxr_dicom_scp_stop(s->scp);
    pthread_join(s->thread, NULL);
    ck_assert_msg(s->run_status == CXR_OK, "run: %s", s->run_err);
    cxr_dicom_scp_free(s->scp);
    s->scp = NULL;
}

FIXTURE void srv_cleanup(struct srv *s)
{
    cxr_test_rmtree(s->dir);
    free(s->dir);
    s->dir = NULL;
}

FIXTURE int srv_events(struct srv *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->n_events;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* Waits (up to 30 s) until `n` store callbacks are running at once. */
FIXTURE bool srv_wait_in_callback(struct srv *s, int n)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 30;
    pthread_mutex_lock(&s->mu);
    while (s->in_callback < n)
        if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) != 0)
            break;
    bool ok = s->in_callback >= n;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

FIXTURE void srv_set_block(struct srv *s, bool block)
{
    pthread_mutex_lock(&s->mu);
    s->block = block;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Number of entries in a directory (without . and ..). */
FIXTURE int dir_count(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

/* ---- child processes (DCMTK peers) -------------------------------------- */

/* Starts `sh -c cmd` with output to `log`; returns the pid. */
FIXTURE pid_t spawn(const char *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
FIXTURE pid_t spawn(const char *log, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    pid_t pid = fork();
    if (pid == 0) {
        /* only async-signal-safe calls here: the parent has SCP threads */
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Waits for a child; returns its exit status (128+signal when killed). */
FIXTURE int wait_child(pid_t pid)
{
    int st = 0;
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Runs a command with output to `log`; returns the exit status. */
FIXTURE int run_logged(const char *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
FIXTURE int run_logged(const char *log, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return wait_child(spawn(log, "%s", cmd));
}

FIXTURE bool file_contains(const char *path, const char *needle)
{
    char *text = cxr_test_read_file(path, NULL);
    bool found = text && strcasestr(text, needle) != NULL;
    free(text);
    return found;
}

FIXTURE char *file_text(const char *path)
{
    char *t = cxr_test_read_file(path, NULL);
    return t ? t : strdup("(no output)");
}

/* A TCP port that was free a moment ago (for DCMTK's storescp). */
FIXTURE uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sin;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    getsockname(fd, (struct sockaddr *)&sin, &len);
    close(fd);
    return ntohs(sin.sin_port);
}

/* Polls with our SCU's C-ECHO until the peer answers (up to 15 s). */
FIXTURE bool wait_peer(const char *ae, uint16_t port, const struct cxr_dicom_tls *tls)
{
    struct cxr_dicom_scu_target t = {.called_ae = ae,
                                     .calling_ae = "PROBE",
                                     .host = "127.0.0.1",
                                     .port = port,
                                     .connect_timeout_s = 2,
                                     .dimse_timeout_s = 5};
    if (tls)
        t.tls = *tls;
    char err[CXR_ERRLEN];
    for (int i = 0; i < 150; i++) {
        if (cxr_dicom_scu_echo(&t, err) == CXR_OK)
            return true;
        usleep(100 * 1000);
    }
    return false;
}

/* ---- DICOM files --------------------------------------------------------- */

FIXTURE void put16(FILE *f, uint16_t v)
{
    fputc(v & 0xFF, f);
    fputc(v >> 8, f);
}
FIXTURE void put32(FILE *f, uint32_t v)
{
    put16(f, v & 0xFFFF);
    put16(f, v >> 16);
}

/* One explicit VR little endian element; strings padded to even length
 * (UI with NUL, others with space). */
FIXTURE void put_elem(FILE *f, uint16_t g, uint16_t e, const char *vr, const void *val,
                      uint32_t len)
{
    bool pad = len & 1;
    uint32_t plen = len + pad;
    put16(f, g);
    put16(f, e);
    fwrite(vr, 1, 2, f);
    if (!strcmp(vr, "OB") || !strcmp(vr, "OW") || !strcmp(vr, "SQ") || !strcmp(vr, "UN")) {
        put16(f, 0);
        put32(f, plen);
    } else {
        put16(f, (uint16_t)plen);
    }
    fwrite(val, 1, len, f);
    if (pad)
        fputc(!strcmp(vr, "UI") || !strcmp(vr, "OB") ? 0 : ' ', f);
}
FIXTURE void put_str(FILE *f, uint16_t g, uint16_t e, const char *vr, const char *s)
{
    put_elem(f, g, e, vr, s, (uint32_t)strlen(s));
}
FIXTURE void put_us(FILE *f, uint16_t g, uint16_t e, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v & 0xFF), (uint8_t)(v >> 8)};
    put_elem(f, g, e, "US", b, 2);
}

/* A unique UID under 2.25 for this test process. */
FIXTURE void make_uid(char *out, size_t len)
{
    static unsigned counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    pathf(out, len, "2.25.%ld%09ld%u%u", (long)ts.tv_sec, ts.tv_nsec, (unsigned)getpid(),
          ++counter);
}

/* Writes a CR image (explicit VR little endian Part 10) of rows x cols with
 * `bits` (8 or 16, 12 stored for 16) and a gradient; returns the SOP
 * Instance UID in uid_out (65 bytes). */
FIXTURE void write_cr(const char *path, int rows, int cols, int bits, char *uid_out)
{
    char uid[65], study[65], series[65];
    make_uid(uid, sizeof uid);
    make_uid(study, sizeof study);
    make_uid(series, sizeof series);
    const char *cr = "1.2.840.10008.5.1.4.1.1.1";
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    char pre[128] = {0};
    fwrite(pre, 1, 128, f);
    fwrite("DICM", 1, 4, f);
    /* meta: build in memory to know the group length */
    char *meta = NULL;
    size_t mlen = 0;
    FILE *m = open_memstream(&meta, &mlen);
    uint8_t ver[2] = {0, 1};
    put_elem(m, 2, 0x0001, "OB", ver, 2);
    put_str(m, 2, 0x0002, "UI", cr);
    put_str(m, 2, 0x0003, "UI", uid);
    put_str(m, 2, 0x0010, "UI", "1.2.840.10008.1.2.1");
    put_str(m, 2, 0x0012, "UI", "1.2.826.0.1.3680043.10.1");
    fclose(m);
    uint8_t gl[4] = {(uint8_t)mlen, (uint8_t)(mlen >> 8), (uint8_t)(mlen >> 16),
                     (uint8_t)(mlen >> 24)};
    put_elem(f, 2, 0, "UL", gl, 4);
    fwrite(meta, 1, mlen, f);
    free(meta);
    put_str(f, 0x0008, 0x0016, "UI", cr);
    put_str(f, 0x0008, 0x0018, "UI", uid);
    put_str(f, 0x0008, 0x0060, "CS", "CR");
    put_str(f, 0x0010, 0x0010, "PN", "NET^TEST");
    put_str(f, 0x0010, 0x0020, "LO", "NETTEST01");
    put_str(f, 0x0018, 0x0015, "CS", "CHEST");
    put_str(f, 0x0020, 0x000D, "UI", study);
    put_str(f, 0x0020, 0x000E, "UI", series);
    put_us(f, 0x0028, 0x0002, 1);
    put_str(f, 0x0028, 0x0004, "CS", "MONOCHROME2");
    put_us(f, 0x0028, 0x0010, (uint16_t)rows);
    put_us(f, 0x0028, 0x0011, (uint16_t)cols);
    put_us(f, 0x0028, 0x0100, (uint16_t)bits);
    put_us(f, 0x0028, 0x0101, (uint16_t)(bits == 8 ? 8 : 12));
    put_us(f, 0x0028, 0x0102, (uint16_t)(bits == 8 ? 7 : 11));
    put_us(f, 0x0028, 0x0103, 0);
    size_t n = (size_t)rows * cols * (bits / 8);
    uint8_t *px = malloc(n);
    for (int y = 0; y < rows; y++)
        for (int x = 0; x < cols; x++) {
            unsigned v = (unsigned)((x * 7 + y * 13 + (x * y) % 31) % (bits == 8 ? 256 : 4096));
            if (bits == 8) {
                px[y * cols + x] = (uint8_t)v;
            } else {
                px[2 * (y * cols + x)] = (uint8_t)(v & 0xFF);
                px[2 * (y * cols + x) + 1] = (uint8_t)(v >> 8);
            }
        }
    put_elem(f, 0x7FE0, 0x0010, bits == 8 ? "OB" : "OW", px, (uint32_t)n);
    free(px);
    ck_assert_int_eq(fclose(f), 0);
    if (uid_out)
        pathf(uid_out, 65, "%s", uid);
}

/* Reads the File Meta Information of a Part 10 file: the offset where the
 * data set starts and the SOP instance and transfer syntax UIDs. False when
 * the file has no meta header (raw data set). */
FIXTURE bool part10_meta(const char *path, size_t *ds_off, char *sop_inst, char *ts)
{
    size_t len = 0;
    uint8_t *b = cxr_test_read_file(path, &len);
    if (!b)
        return false;
    bool ok = len > 144 && memcmp(b + 128, "DICM", 4) == 0;
    if (sop_inst)
        sop_inst[0] = '\0';
    if (ts)
        ts[0] = '\0';
    size_t p = 132;
    while (ok && p + 8 <= len && b[p] == 2 && b[p + 1] == 0) {
        uint16_t el = (uint16_t)(b[p + 2] | b[p + 3] << 8);
        char vr[3] = {(char)b[p + 4], (char)b[p + 5], 0};
        size_t vlen, hdr;
        if (!strcmp(vr, "OB") || !strcmp(vr, "UN") || !strcmp(vr, "SQ") || !strcmp(vr, "OW")) {
            vlen = (size_t)b[p + 8] | (size_t)b[p + 9] << 8 | (size_t)b[p + 10] << 16 |
                   (size_t)b[p + 11] << 24;
            hdr = 12;
        } else {
            vlen = (size_t)(b[p + 6] | b[p + 7] << 8);
            hdr = 8;
        }
        if (p + hdr + vlen > len) {
            ok = false;
            break;
        }
        char *dst = el == 0x0003 ? sop_inst : el == 0x0010 ? ts : NULL;
        if (dst && vlen < 65) {
            size_t n = vlen;
            memcpy(dst, b + p + hdr, n);
            dst[n] = '\0';
            while (n > 0 && (dst[n - 1] == '\0' || dst[n - 1] == ' '))
                dst[--n] = '\0';
        }
        p += hdr + vlen;
    }
    if (ds_off)
        *ds_off = p;
    free(b);
    return ok;
}

/* True when the data sets (bytes after the meta header) of two Part 10
 * files are identical; prints where they differ otherwise. */
FIXTURE bool same_dataset(const char *a, const char *b)
{
    size_t oa, ob, la, lb;
    if (!part10_meta(a, &oa, NULL, NULL) || !part10_meta(b, &ob, NULL, NULL)) {
        printf("same_dataset: %s or %s is not Part 10\n", a, b);
        return false;
    }
    uint8_t *da = cxr_test_read_file(a, &la), *db = cxr_test_read_file(b, &lb);
    bool same = da && db && la - oa == lb - ob && memcmp(da + oa, db + ob, la - oa) == 0;
    if (!same && da && db) {
        size_t i = 0;
        while (oa + i < la && ob + i < lb && da[oa + i] == db[ob + i])
            i++;
        printf("data sets differ: %s (%zu bytes) vs %s (%zu bytes), first at %zu\n", a, la - oa, b,
               lb - ob, i);
    }
    free(da);
    free(db);
    return same;
}

/* The Part 10 file in `dir` whose SOP Instance UID is `uid` ("" if none). */
FIXTURE void find_by_uid(const char *dir, const char *uid, char *out)
{
    out[0] = '\0';
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char path[PATH_MAX], inst[65];
        pathf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (e->d_name[0] != '.' && part10_meta(path, NULL, inst, NULL) && !strcmp(inst, uid)) {
            pathf(out, PATH_MAX, "%s", path);
            break;
        }
    }
    if (d)
        closedir(d);
}

/* ---- raw socket client --------------------------------------------------- */

FIXTURE int raw_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    return fd;
}

FIXTURE void raw_send(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0)
            return; /* the SCP may close on us: that is fine */
        p += n;
        len -= (size_t)n;
    }
}

FIXTURE void be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
FIXTURE void be32(uint8_t *p, uint32_t v)
{
    be16(p, (uint16_t)(v >> 16));
    be16(p + 2, (uint16_t)v);
}

/* Appends an A-ASSOCIATE-RQ variable item (type, UID or raw bytes). */
FIXTURE size_t item(uint8_t *p, uint8_t type, const void *val, uint16_t len)
{
    p[0] = type;
    p[1] = 0;
    be16(p + 2, len);
    memcpy(p + 4, val, len);
    return 4 + (size_t)len;
}

/* Sends an A-ASSOCIATE-RQ (PS3.8 9.3.2) proposing one presentation context
 * (id 1: abstract syntax, implicit VR LE) and returns the type of the
 * answer PDU (2 = AC, 3 = RJ, 0 on error). */
FIXTURE int raw_associate(int fd, const char *calling, const char *called, const char *abstract)
{
    uint8_t pdu[1024];
    memset(pdu, 0, sizeof pdu);
    pdu[0] = 0x01;
    size_t p = 6;
    be16(pdu + p, 1);
    p += 4;
    char ae[17];
    pathf(ae, sizeof ae, "%-16s", called);
    memcpy(pdu + p, ae, 16);
    p += 16;
    pathf(ae, sizeof ae, "%-16s", calling);
    memcpy(pdu + p, ae, 16);
    p += 16 + 32;
    p += item(pdu + p, 0x10, "1.2.840.10008.3.1.1.1", 21);
    uint8_t pc[256];
    size_t q = 0;
    pc[q++] = 1;
    pc[q++] = 0;
    pc[q++] = 0;
    pc[q++] = 0;
    q += item(pc + q, 0x30, abstract, (uint16_t)strlen(abstract));
    q += item(pc + q, 0x40, "1.2.840.10008.1.2", 17);
    p += item(pdu + p, 0x20, pc, (uint16_t)q);
    uint8_t ui[128];
    size_t u = 0;
    uint8_t maxlen[4];
    be32(maxlen, 16384);
    u += item(ui + u, 0x51, maxlen, 4);
    u += item(ui + u, 0x52, "1.2.826.0.1.3680043.10.2", 24);
    p += item(pdu + p, 0x50, ui, (uint16_t)u);
    be32(pdu + 2, (uint32_t)(p - 6));
    raw_send(fd, pdu, p);
    uint8_t hdr[6];
    size_t got = 0;
    while (got < 6) {
        ssize_t n = recv(fd, hdr + got, 6 - got, 0);
        if (n <= 0)
            return 0;
        got += (size_t)n;
    }
    uint32_t rest =
        (uint32_t)hdr[2] << 24 | (uint32_t)hdr[3] << 16 | (uint32_t)hdr[4] << 8 | hdr[5];
    uint8_t skip[4096];
    while (rest > 0) {
        ssize_t n = recv(fd, skip, rest < sizeof skip ? rest : sizeof skip, 0);
        if (n <= 0)
            return 0;
        rest -= (uint32_t)n;
    }
    return hdr[0];
}

/* One implicit VR LE command element (group 0000). */
FIXTURE size_t cmd_elem(uint8_t *p, uint16_t el, const void *val, uint32_t len)
{
    uint32_t plen = len + (len & 1);
    p[0] = 0;
    p[1] = 0;
    p[2] = (uint8_t)el;
    p[3] = (uint8_t)(el >> 8);
    p[4] = (uint8_t)plen;
    p[5] = (uint8_t)(plen >> 8);
    p[6] = (uint8_t)(plen >> 16);
    p[7] = (uint8_t)(plen >> 24);
    memcpy(p + 8, val, len);
    if (len & 1)
        p[8 + len] = 0;
    return 8 + plen;
}

/* Sends a C-STORE-RQ command and `partial` bytes of a data set that never
 * ends (no last fragment), on context 1: a stream cut mid-object. */
FIXTURE void raw_truncated_store(int fd, const char *sop_class, const char *sop_inst,
                                 size_t partial)
{
    uint8_t cmd[512];
    size_t c = 12; /* room for (0000,0000) UL */
    uint16_t v;
    c += cmd_elem(cmd + c, 0x0002, sop_class, (uint32_t)strlen(sop_class));
    v = 0x0001;
    c += cmd_elem(cmd + c, 0x0100, &v, 2);
    v = 1;
    c += cmd_elem(cmd + c, 0x0110, &v, 2);
    v = 0;
    c += cmd_elem(cmd + c, 0x0700, &v, 2);
    v = 0x0000;
    c += cmd_elem(cmd + c, 0x0800, &v, 2);
    c += cmd_elem(cmd + c, 0x1000, sop_inst, (uint32_t)strlen(sop_inst));
    uint32_t gl = (uint32_t)(c - 12);
    cmd_elem(cmd, 0x0000, &gl, 4);
    /* P-DATA-TF with one command PDV (last fragment) */
    uint8_t pdu[600];
    pdu[0] = 0x04;
    pdu[1] = 0;
    be32(pdu + 2, (uint32_t)(4 + 2 + c));
    be32(pdu + 6, (uint32_t)(2 + c));
    pdu[10] = 1;    /* context id */
    pdu[11] = 0x03; /* command, last */
    memcpy(pdu + 12, cmd, c);
    raw_send(fd, pdu, 12 + c);
    /* data PDVs, never the last one */
    size_t chunk = 8192;
    uint8_t *data = calloc(1, 12 + chunk);
    for (size_t sent = 0; sent < partial; sent += chunk) {
        data[0] = 0x04;
        be32(data + 2, (uint32_t)(4 + 2 + chunk));
        be32(data + 6, (uint32_t)(2 + chunk));
        data[10] = 1;
        data[11] = 0x00; /* data, not last */
        raw_send(fd, data, 12 + chunk);
    }
    free(data);
}

/* ---- building A-ASSOCIATE-RQ PDUs (PS3.8 9.3.2), well-formed or not ----- */

/* A PDU under construction: items are opened with pdu_open (type, length
 * placeholder) and closed with pdu_close, which writes the length of what
 * was put in between (16 bits; the PDU's own 32). */
struct pdu {
    uint8_t b[1 << 17];
    size_t n;
};

FIXTURE void pdu_put(struct pdu *p, const void *v, size_t n)
{
    ck_assert_uint_le(p->n + n, sizeof p->b);
    memcpy(p->b + p->n, v, n);
    p->n += n;
}
FIXTURE void pdu_u8(struct pdu *p, uint8_t v) { pdu_put(p, &v, 1); }
FIXTURE void pdu_be16(struct pdu *p, uint16_t v)
{
    uint8_t b[2];
    be16(b, v);
    pdu_put(p, b, 2);
}
FIXTURE void pdu_be32(struct pdu *p, uint32_t v)
{
    uint8_t b[4];
    be32(b, v);
    pdu_put(p, b, 4);
}
FIXTURE size_t pdu_open(struct pdu *p, uint8_t type)
{
    size_t at = p->n;
    uint8_t h[4] = {type, 0, 0, 0};
    pdu_put(p, h, 4);
    return at;
}
FIXTURE void pdu_close(struct pdu *p, size_t at)
{
    size_t len = p->n - at - 4;
    ck_assert_uint_le(len, 0xFFFF);
    be16(p->b + at + 2, (uint16_t)len);
}
/* An item or sub-item holding a string (a UID, an AE title...). */
FIXTURE void pdu_text(struct pdu *p, uint8_t type, const char *text)
{
    size_t at = pdu_open(p, type);
    pdu_put(p, text, strlen(text));
    pdu_close(p, at);
}
/* A sub-item of `len` bytes of '1' (an over-long UID). */
FIXTURE void pdu_fill(struct pdu *p, uint8_t type, size_t len)
{
    size_t at = pdu_open(p, type);
    ck_assert_uint_le(p->n + len, sizeof p->b);
    memset(p->b + p->n, '1', len);
    p->n += len;
    pdu_close(p, at);
}
/* PDU header and fixed fields of an A-ASSOCIATE-RQ. */
FIXTURE void rq_begin(struct pdu *p, const char *calling, const char *called)
{
    p->n = 0;
    uint8_t h[6] = {0x01, 0, 0, 0, 0, 0};
    pdu_put(p, h, 6);
    pdu_be16(p, 1);
    pdu_be16(p, 0);
    char ae[17];
    pathf(ae, sizeof ae, "%-16s", called);
    pdu_put(p, ae, 16);
    pathf(ae, sizeof ae, "%-16s", calling);
    pdu_put(p, ae, 16);
    uint8_t zero[32] = {0};
    pdu_put(p, zero, 32);
}
FIXTURE void rq_end(struct pdu *p) { be32(p->b + 2, (uint32_t)(p->n - 6)); }
/* A presentation context item: id, abstract syntax, one transfer syntax. */
FIXTURE void rq_context(struct pdu *p, uint8_t id, const char *abstract, const char *ts)
{
    size_t at = pdu_open(p, 0x20);
    uint8_t h[4] = {id, 0, 0, 0};
    pdu_put(p, h, 4);
    pdu_text(p, 0x30, abstract);
    pdu_text(p, 0x40, ts);
    pdu_close(p, at);
}
FIXTURE void rq_app_context(struct pdu *p) { pdu_text(p, 0x10, "1.2.840.10008.3.1.1.1"); }
/* Maximum length and implementation class UID sub-items (inside 0x50). */
FIXTURE void rq_user_basics(struct pdu *p)
{
    size_t at = pdu_open(p, 0x51);
    pdu_be32(p, 16384);
    pdu_close(p, at);
    pdu_text(p, 0x52, "1.2.826.0.1.3680043.10.2");
}
/* A complete, minimal request: Verification, implicit VR LE. */
FIXTURE void rq_minimal(struct pdu *p, const char *calling, const char *called)
{
    rq_begin(p, calling, called);
    rq_app_context(p);
    rq_context(p, 1, "1.2.840.10008.1.1", "1.2.840.10008.1.2");
    size_t ui = pdu_open(p, 0x50);
    rq_user_basics(p);
    pdu_close(p, ui);
    rq_end(p);
}

/* Reads one PDU header from `fd` (30 s at most); returns the PDU type, 0
 * when the peer closed first, and the 4 bytes after the header in `after`
 * (A-ABORT: reserved, reserved, source, reason). */
FIXTURE int raw_read_pdu(int fd, uint8_t after[4])
{
    struct timeval tv = {30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    uint8_t b[10];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t n = recv(fd, b + got, sizeof b - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (after) {
        memset(after, 0, 4);
        if (got >= 10)
            memcpy(after, b + 6, 4);
    }
    return got < 6 ? 0 : b[0];
}

/* ---- a corpus of files in every transfer syntax the SCP accepts ---------- */

struct corpus_file {
    char path[PATH_MAX];
    char ts[65];    /* "" for a raw data set without meta header */
    char uid[65];   /* SOP Instance UID */
    bool generated; /* written here (no sequences: DCMTK resends it byte-identical) */
};

/* storescu's option that proposes a transfer syntax (with -R), NULL when
 * storescu 3.6.7 has none (.57). */
FIXTURE const char *storescu_flag(const char *ts)
{
    static const char *map[][2] = {
        {"", ""},
        {"1.2.840.10008.1.2", "-xi"},
        {"1.2.840.10008.1.2.1", "-xe"},
        {"1.2.840.10008.1.2.2", "-xb"},
        {"1.2.840.10008.1.2.1.99", "-xd"},
        {"1.2.840.10008.1.2.4.50", "-xy"},
        {"1.2.840.10008.1.2.4.51", "-xx"},
        {"1.2.840.10008.1.2.4.70", "-xs"},
        {"1.2.840.10008.1.2.4.80", "-xt"},
        {"1.2.840.10008.1.2.4.81", "-xu"},
        {"1.2.840.10008.1.2.5", "-xr"},
        {"1.2.840.10008.1.2.4.90", "-xv"},
        {"1.2.840.10008.1.2.4.91", "-xw"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(ts, map[i][0]))
            return map[i][1];
    return NULL;
}

FIXTURE int corpus_add(struct corpus_file *out, int n, int max, const char *path, bool generated)
{
    if (n >= max)
        return n;
    struct corpus_file *c = &out[n];
    memset(c, 0, sizeof *c);
    pathf(c->path, sizeof c->path, "%s", path);
    c->generated = generated;
    if (!part10_meta(path, NULL, c->uid, c->ts)) {
        /* raw data set: ask dcmdump for the instance UID */
        char cmd[PATH_MAX + 64];
        pathf(cmd, sizeof cmd, "dcmdump -q +P 0008,0018 '%s' 2>/dev/null", path);
        FILE *p = popen(cmd, "r");
        char line[512] = "";
        if (p) {
            if (!fgets(line, sizeof line, p))
                line[0] = '\0';
            pclose(p);
        }
        char *a = strchr(line, '['), *b = a ? strchr(a, ']') : NULL;
        if (!a || !b)
            return n;
        pathf(c->uid, sizeof c->uid, "%.*s", (int)(b - a - 1), a + 1);
        c->ts[0] = '\0';
    }
    return n + 1;
}

/* Builds the corpus in `dir`: a 16-bit (12 stored) and an 8-bit CR written
 * here, converted with DCMTK's dcmconv/dcmcjpeg/dcmcjpls/dcmcrle to implicit
 * LE, explicit BE, deflated, JPEG .50 .51 .57 .70, JPEG-LS .80 .81 and RLE;
 * then the .dcm files of tests/data and, when present, ../shared/data/dicom-cxr.
 * Returns the number of files. */
FIXTURE int corpus_build(const char *dir, struct corpus_file *out, int max, bool with_shared)
{
    char p16[PATH_MAX], p8[PATH_MAX], path[PATH_MAX];
    pathf(p16, sizeof p16, "%s/cr16.dcm", dir);
    pathf(p8, sizeof p8, "%s/cr8.dcm", dir);
    write_cr(p16, 96, 80, 16, NULL);
    write_cr(p8, 96, 80, 8, NULL);
    int n = 0;
    n = corpus_add(out, n, max, p16, true);
    n = corpus_add(out, n, max, p8, true);
    static const struct {
        const char *name, *src, *cmd;
    } conv[] = {
        {"implicit.dcm", "cr16", "dcmconv +ti"}, {"bigendian.dcm", "cr16", "dcmconv +tb"},
        {"deflated.dcm", "cr16", "dcmconv +td"}, {"jpeg50.dcm", "cr8", "dcmcjpeg +eb"},
        {"jpeg51.dcm", "cr16", "dcmcjpeg +ee"},  {"jpeg57.dcm", "cr16", "dcmcjpeg +el"},
        {"jpeg70.dcm", "cr16", "dcmcjpeg +e1"},  {"jls80.dcm", "cr16", "dcmcjpls +el"},
        {"jls81.dcm", "cr16", "dcmcjpls +en"},   {"rle.dcm", "cr16", "dcmcrle"},
    };
    for (size_t i = 0; i < sizeof conv / sizeof conv[0]; i++) {
        /* a fresh SOP Instance UID per converted file keeps them apart */
        char src[PATH_MAX];
        pathf(src, sizeof src, "%s/%s.src.dcm", dir, conv[i].name);
        write_cr(src, 96, 80, !strcmp(conv[i].src, "cr8") ? 8 : 16, NULL);
        pathf(path, sizeof path, "%s/%s", dir, conv[i].name);
        int rc = cxr_test_sh("%s '%s' '%s' >/dev/null 2>&1", conv[i].cmd, src, path);
        ck_assert_msg(rc == 0, "'%s' failed on %s", conv[i].cmd, src);
        n = corpus_add(out, n, max, path, true);
        unlink(src);
    }
    char data[PATH_MAX];
    pathf(data, sizeof data, "%s/tests/data", cxr_test_source_dir());
    DIR *d = opendir(data);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l > 4 && !strcmp(e->d_name + l - 4, ".dcm")) {
            pathf(path, sizeof path, "%s/%s", data, e->d_name);
            n = corpus_add(out, n, max, path, false);
        }
    }
    if (d)
        closedir(d);
    if (with_shared && cxr_test_have_shared("dicom-cxr", "real chest files over the network")) {
        char cmd[PATH_MAX + 64];
        pathf(cmd, sizeof cmd, "find '%s/dicom-cxr' -type f ! -name '*.tsv' ! -name '*.md' | sort",
              cxr_test_shared_data());
        FILE *p = popen(cmd, "r");
        while (p && fgets(path, sizeof path, p)) {
            path[strcspn(path, "\n")] = '\0';
            n = corpus_add(out, n, max, path, false);
        }
        if (p)
            pclose(p);
    }
    return n;
}

#endif
