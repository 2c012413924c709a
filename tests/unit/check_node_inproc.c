/* check_node_inproc.c — the node in one process with the project's own
 * DICOM peers (issue 12 step 7): cxr_node_new/run on a thread; our SCU
 * (cxr_dicom_scu_store_file) sends a chest film; our SCP (the networking
 * suites' recording SCP) is the PACS the SR goes to. Paths covered:
 *   - the reporter: one SR per stable study, delivered, naming the image;
 *   - the queue: a PACS that refuses SRs makes a delivery retry and then go
 *     to the dead letters; put back once the PACS accepts, it is delivered;
 *   - reload: a good configuration is taken, one whose model does not load
 *     is refused while the node goes on serving.
 * Every wait is for a state (an event, a row), with a generous last-resort
 * deadline that says what it waited for. */
#include "dicom_net_fixture.h"

#include "cxr/conf.h"
#include "cxr/node.h"
#include "cxr/store.h"

#define NODE_AE "CXRNODE"

/* Whether the bytes of `path` hold `needle` (a DICOM file: NULs inside). */
static bool file_has(const char *path, const char *needle)
{
    size_t len = 0;
    char *b = cxr_test_read_file(path, &len);
    bool found = b && memmem(b, len, needle, strlen(needle)) != NULL;
    free(b);
    return found;
}

struct inproc {
    struct cxr_node *node;
    pthread_t thread;
    enum cxr_status run_status;
    char run_err[CXR_ERRLEN];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool ready;
};

static void on_state(void *ctx, const char *state)
{
    struct inproc *ip = ctx;
    pthread_mutex_lock(&ip->mu);
    if (!strncmp(state, "READY=1", 7))
        ip->ready = true;
    pthread_cond_broadcast(&ip->cv);
    pthread_mutex_unlock(&ip->mu);
}

static void *node_thread(void *arg)
{
    struct inproc *ip = arg;
    ip->run_status = cxr_node_run(ip->node, ip->run_err);
    pthread_mutex_lock(&ip->mu);
    pthread_cond_broadcast(&ip->cv);
    pthread_mutex_unlock(&ip->mu);
    return NULL;
}

static struct cxr_conf *conf_for(const char *dir, uint16_t port, uint16_t pacs_port,
                                 const char *model)
{
    char xml[4096], err[CXR_ERRLEN] = "";
    pathf(xml, sizeof xml,
          "<cxr-triage>"
          "<model><path>%s</path><threads>1</threads><batch-size>2</batch-size></model>"
          "<gate><age-policy>ignore</age-policy></gate>"
          "<node><ae-title>" NODE_AE "</ae-title><port>%u</port><spool-dir>%s/spool</spool-dir>"
          "<study-stable-seconds>1</study-stable-seconds><retry-base-seconds>1</retry-base-seconds>"
          "<retry-cap-seconds>1</retry-cap-seconds><retry-max-attempts>2</retry-max-attempts>"
          "<disk-min-free-mb>1</disk-min-free-mb></node>"
          "<http><enabled>false</enabled></http>"
          "<destination><name>pacs</name><ae-title>" NET_AE "</ae-title><host>127.0.0.1</host>"
          "<port>%u</port></destination>"
          "</cxr-triage>",
          model, (unsigned)port, dir, (unsigned)pacs_port);
    struct cxr_conf *c = NULL;
    ck_assert_msg(cxr_conf_load_memory(xml, strlen(xml), "inproc.xml", &c, err) == CXR_OK, "%s",
                  err);
    return c;
}

/* Waits until fn(arg) or the deadline; false when it timed out. */
static bool wait_for(bool (*fn)(void *), void *arg, int seconds)
{
    struct timespec t0, now, nap = {0, 20 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (fn(arg))
            return true;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > seconds)
            return false;
        nanosleep(&nap, NULL);
    }
}

struct want_events {
    struct srv *s;
    int n;
};
static bool have_events(void *arg)
{
    struct want_events *w = arg;
    return srv_events(w->s) >= w->n;
}

struct want_dead {
    const char *store_path;
    int64_t dead;
};
static bool have_dead(void *arg)
{
    struct want_dead *w = arg;
    struct cxr_node_store *st = NULL;
    char err[CXR_ERRLEN];
    if (cxr_node_store_open_sqlite(w->store_path, true, &st, err) != CXR_OK)
        return false;
    struct cxr_node_delivery_row *rows = NULL;
    size_t n = 0;
    bool ok = cxr_node_store_deliveries_list(st, CXR_NODE_DELIVERY_DEAD, 10, &rows, &n) == CXR_OK;
    free(rows);
    cxr_node_store_close(st);
    return ok && (int64_t)n >= w->dead;
}

START_TEST(test_node_in_process)
{
    struct srv pacs;
    struct cxr_dicom_scp_config pcfg = srv_config(&pacs);
    srv_start(&pacs, &pcfg);
    char model[PATH_MAX], store_path[PATH_MAX], film[PATH_MAX], uid[80];
    pathf(model, sizeof model, "%s/model.safetensors", pacs.dir);
    ck_assert_int_eq(cxr_test_sh("'%s' model init --arch resnet18 --input 64x64 --channels 1 "
                                 "--seed 3 --out '%s' >/dev/null",
                                 getenv("CXR_BIN"), model),
                     0);
    pathf(film, sizeof film, "%s/film.dcm", pacs.dir);
    write_cr(film, 320, 256, 8, uid);

    uint16_t port = free_port();
    struct inproc ip = {.run_status = CXR_OK};
    pthread_mutex_init(&ip.mu, NULL);
    pthread_cond_init(&ip.cv, NULL);
    char err[CXR_ERRLEN] = "";
    ck_assert_msg(cxr_node_new(conf_for(pacs.dir, port, pacs.port, model), NULL, &ip.node, err) ==
                      CXR_OK,
                  "%s", err);
    cxr_node_set_state_callback(ip.node, on_state, &ip);
    ck_assert_int_eq(pthread_create(&ip.thread, NULL, node_thread, &ip), 0);
    pthread_mutex_lock(&ip.mu);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 120;
    while (!ip.ready && pthread_cond_timedwait(&ip.cv, &ip.mu, &dl) == 0)
        ;
    bool ready = ip.ready;
    pthread_mutex_unlock(&ip.mu);
    ck_assert_msg(ready, "the node did not get ready in 120 s: %s", ip.run_err);

    /* ---- the reporter: the film in, one SR out to the PACS, naming it */
    struct cxr_dicom_scu_target to = {.called_ae = NODE_AE,
                                      .calling_ae = "INPROC",
                                      .host = "127.0.0.1",
                                      .port = port,
                                      .connect_timeout_s = 10,
                                      .dimse_timeout_s = 60};
    uint16_t dimse = 0xFFFF;
    ck_assert_msg(cxr_dicom_scu_store_file(&to, film, &dimse, err) == CXR_OK, "%s", err);
    ck_assert_int_eq(dimse, 0);
    struct want_events one = {&pacs, 1};
    ck_assert_msg(wait_for(have_events, &one, 120), "no SR at the PACS within 120 s");
    pthread_mutex_lock(&pacs.mu);
    struct rx_event sr = pacs.ev[0];
    pthread_mutex_unlock(&pacs.mu);
    ck_assert_str_eq(sr.sop_class, "1.2.840.10008.5.1.4.1.1.88.33");
    ck_assert_str_eq(sr.called, NET_AE);
    ck_assert_msg(file_has(sr.kept, uid), "the SR does not name the film %s", uid);

    /* ---- the queue: the PACS refuses the next SR (0xA700): two attempts,
     * then a dead letter; put back with the PACS accepting: delivered */
    pthread_mutex_lock(&pacs.mu);
    pacs.answer = 0xA700;
    pthread_mutex_unlock(&pacs.mu);
    char film2[PATH_MAX], uid2[80];
    pathf(film2, sizeof film2, "%s/film2.dcm", pacs.dir);
    write_cr(film2, 320, 256, 8, uid2);
    ck_assert_msg(cxr_dicom_scu_store_file(&to, film2, &dimse, err) == CXR_OK, "%s", err);
    char spool[PATH_MAX];
    pathf(spool, sizeof spool, "%s/spool", pacs.dir);
    cxr_node_store_path(spool, store_path, sizeof store_path);
    struct want_dead dead = {store_path, 1};
    ck_assert_msg(wait_for(have_dead, &dead, 120), "the refused SR is not a dead letter in 120 s");
    ck_assert_int_eq(srv_events(&pacs), 3); /* the first SR, then two refused attempts */
    pthread_mutex_lock(&pacs.mu);
    pacs.answer = 0;
    pthread_mutex_unlock(&pacs.mu);
    struct cxr_node_store *st = NULL;
    ck_assert_msg(cxr_node_store_open_sqlite(store_path, false, &st, err) == CXR_OK, "%s", err);
    int64_t count = 0;
    ck_assert_int_eq(cxr_node_store_deliveries_retry(st, 0, 0, &count), CXR_OK);
    ck_assert_int_eq(count, 1);
    cxr_node_store_close(st);
    struct want_events four = {&pacs, 4};
    ck_assert_msg(wait_for(have_events, &four, 120), "the dead letter put back was not delivered");
    pthread_mutex_lock(&pacs.mu);
    ck_assert_msg(file_has(pacs.ev[3].kept, uid2), "the retried SR does not name film 2");
    pthread_mutex_unlock(&pacs.mu);

    /* ---- reload: a model that does not load is refused, serving goes on;
     * a good configuration is taken */
    char missing[PATH_MAX];
    pathf(missing, sizeof missing, "%s/no-such-model.safetensors", pacs.dir);
    ck_assert_int_ne(cxr_node_reload(ip.node, conf_for(pacs.dir, port, pacs.port, missing), err),
                     CXR_OK);
    ck_assert_msg(strstr(err, "no-such-model"), "refusal does not name the model: %s", err);
    ck_assert_msg(cxr_dicom_scu_echo(&to, err) == CXR_OK, "no C-ECHO after a refused reload: %s",
                  err);
    ck_assert_msg(cxr_node_reload(ip.node, conf_for(pacs.dir, port, pacs.port, model), err) ==
                      CXR_OK,
                  "%s", err);
    char film3[PATH_MAX], uid3[80];
    pathf(film3, sizeof film3, "%s/film3.dcm", pacs.dir);
    write_cr(film3, 320, 256, 8, uid3);
    ck_assert_msg(cxr_dicom_scu_store_file(&to, film3, &dimse, err) == CXR_OK, "%s", err);
    struct want_events five = {&pacs, 5};
    ck_assert_msg(wait_for(have_events, &five, 120), "no SR after the reload");

    cxr_node_stop(ip.node);
    pthread_join(ip.thread, NULL);
    ck_assert_msg(ip.run_status == CXR_OK, "run: %s", ip.run_err);
    cxr_node_free(ip.node);
    srv_stop(&pacs);
    srv_cleanup(&pacs);
}
END_TEST

static Suite *inproc_suite(void)
{
    Suite *s = suite_create("node_inproc");
    TCase *tc = tcase_create("node");
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, test_node_in_process);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(inproc_suite()); }
