/* check_node.c — the node's pieces that need no DICOM peer: retry
 * backoff, worklist order and escalation, the PHI policy of the worklist,
 * Prometheus metrics, the HTTP endpoint over a real job store, and the
 * node's configuration keys. The node end to end (real storescu/storescp
 * peers) is tested by tests/integration/test_node_*.sh. */
#include <arpa/inet.h>
#include <stddef.h>
#include <json-c/json.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cxr/node.h"
#include "cxr/worklist.h"
#include "test_util.h"

/* One received instance through the store's real entry, instances_add: a
 * new job (state RECEIVED), with its bytes kept in the store when `data`
 * is given; *duplicate for a SOP Instance UID already present. */
static enum cxr_status add_instance(struct cxr_node_store *s,
                                    const struct cxr_triage_instance_row *row, const void *data,
                                    size_t len, bool *duplicate, int64_t *id)
{
    struct cxr_node_store_new_instance it = {.row = row, .data = data, .data_len = len};
    enum cxr_status st = cxr_node_store_instances_add(s, &it, 1);
    *duplicate = it.duplicate;
    if (id)
        *id = it.id;
    return st;
}

/* ------------------------------------------------------------------ backoff */

START_TEST(test_backoff_grows_to_cap_with_jitter)
{
    const int64_t base = 1000, cap = 60000;
    int64_t prev_nominal = 0;
    for (int32_t a = 1; a <= 40; a++) {
        int64_t lo = cxr_triage_backoff_ms(a, base, cap, 0.0);
        int64_t hi = cxr_triage_backoff_ms(a, base, cap, 0.999999);
        int64_t nominal = base << (a - 1 < 20 ? a - 1 : 20);
        if (nominal > cap)
            nominal = cap;
        ck_assert_int_eq(lo, nominal / 2);
        ck_assert_int_ge(hi, nominal - 1);
        ck_assert_int_le(hi, nominal);
        ck_assert_int_ge(nominal, prev_nominal);
        prev_nominal = nominal;
        for (double u = 0.0; u < 1.0; u += 0.125) {
            int64_t d = cxr_triage_backoff_ms(a, base, cap, u);
            ck_assert_int_ge(d, lo);
            ck_assert_int_le(d, hi);
        }
    }
    ck_assert_int_eq(cxr_triage_backoff_ms(1, base, cap, 0.0), 500);
    ck_assert_int_eq(cxr_triage_backoff_ms(3, base, cap, 0.0), 2000);
    ck_assert_int_eq(cxr_triage_backoff_ms(INT32_MAX, base, cap, 0.0), cap / 2);
    ck_assert_int_le(cxr_triage_backoff_ms(INT32_MAX, INT64_MAX / 3, INT64_MAX, 0.5), INT64_MAX);
    ck_assert_int_gt(cxr_triage_backoff_ms(INT32_MAX, INT64_MAX / 3, INT64_MAX, 0.5), 0);
    ck_assert_int_eq(cxr_triage_backoff_ms(5, 0, cap, 0.5), 0);
    ck_assert_int_eq(cxr_triage_backoff_ms(0, base, cap, NAN), 500);
}
END_TEST

/* ------------------------------------------------------------------ worklist */

static struct cxr_triage_study_row study(const char *uid, int prio, double score, int64_t first)
{
    struct cxr_triage_study_row r;
    memset(&r, 0, sizeof r);
    snprintf(r.study_instance_uid, sizeof r.study_instance_uid, "%s", uid);
    snprintf(r.accession_number, sizeof r.accession_number, "A%s", uid);
    snprintf(r.patient_id, sizeof r.patient_id, "PATIENT-%s", uid);
    r.priority = prio;
    r.score = score;
    r.first_received_ms = first;
    r.last_received_ms = first;
    return r;
}

START_TEST(test_worklist_order)
{
    /* Expected order: priority desc, score desc, arrival asc. */
    struct cxr_triage_study_row rows[] = {
        study("1", CXR_TRIAGE_PRIORITY_ROUTINE, 0.10, 100),
        study("2", CXR_TRIAGE_PRIORITY_URGENT, 0.91, 300),
        study("3", CXR_TRIAGE_PRIORITY_NOT_ANALYSED, NAN, 50),
        study("4", CXR_TRIAGE_PRIORITY_URGENT, 0.99, 400),
        study("5", CXR_TRIAGE_PRIORITY_PRIORITY, 0.60, 200),
        study("6", CXR_TRIAGE_PRIORITY_ROUTINE, 0.10, 90),
        study("7", CXR_TRIAGE_PRIORITY_ROUTINE, 0.30, 500),
    };
    const char *expect[] = {"4", "2", "5", "7", "6", "1", "3"};
    size_t n = sizeof rows / sizeof rows[0];
    struct cxr_triage_worklist_options o;
    cxr_triage_worklist_options_init(&o, 1000);
    struct cxr_triage_worklist_entry e[7];
    cxr_triage_worklist_order(rows, n, &o, e);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(!strcmp(e[i].study->study_instance_uid, expect[i]),
                      "position %zu: %s, want %s", i, e[i].study->study_instance_uid, expect[i]);
        ck_assert(!e[i].escalated);
        ck_assert_int_eq(e[i].waiting_ms, 1000 - e[i].study->first_received_ms);
    }
}
END_TEST

/* Issue 16: within one priority a study with a warning (e.g. an adult
 * analysed by a pediatric model under age-policy warn) comes after every
 * study without one, whatever its score; priorities still come first. */
START_TEST(test_worklist_warned_after_unwarned)
{
    struct cxr_triage_study_row rows[] = {
        study("1", CXR_TRIAGE_PRIORITY_URGENT, 0.999, 100),
        study("2", CXR_TRIAGE_PRIORITY_URGENT, 0.91, 300),
        study("3", CXR_TRIAGE_PRIORITY_PRIORITY, 0.60, 50),
        study("4", CXR_TRIAGE_PRIORITY_URGENT, 0.95, 400),
    };
    snprintf(rows[0].warning, sizeof rows[0].warning, "patient age 45.0 years is above ...");
    snprintf(rows[3].warning, sizeof rows[3].warning, "patient age 60.0 years is above ...");
    const char *expect[] = {"2", "1", "4", "3"};
    size_t n = sizeof rows / sizeof rows[0];
    struct cxr_triage_worklist_options o;
    cxr_triage_worklist_options_init(&o, 1000);
    struct cxr_triage_worklist_entry e[4];
    cxr_triage_worklist_order(rows, n, &o, e);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(!strcmp(e[i].study->study_instance_uid, expect[i]),
                      "position %zu: %s, want %s", i, e[i].study->study_instance_uid, expect[i]);
}
END_TEST

/* Issue 16: a study marked read counts as read until an image arrives
 * after the mark; then it is back on the list. */
START_TEST(test_study_read_until_new_image)
{
    struct cxr_triage_study_row r = study("1", CXR_TRIAGE_PRIORITY_URGENT, 0.9, 100);
    r.last_received_ms = 500;
    ck_assert(!cxr_triage_study_is_read(&r));
    r.read_ms = 600;
    ck_assert(cxr_triage_study_is_read(&r));
    r.read_ms = 500;
    ck_assert(cxr_triage_study_is_read(&r));
    r.last_received_ms = 700; /* a late image */
    ck_assert(!cxr_triage_study_is_read(&r));
    struct cxr_triage_worklist_options o;
    cxr_triage_worklist_options_init(&o, 1000);
    char *j = cxr_triage_worklist_json(&r, 1, &o);
    ck_assert_ptr_nonnull(j);
    ck_assert_ptr_nonnull(strstr(j, "\"read\":false"));
    free(j);
    r.read_ms = 800;
    j = cxr_triage_worklist_json(&r, 1, &o);
    ck_assert_ptr_nonnull(strstr(j, "\"read\":true"));
    ck_assert_ptr_nonnull(strstr(j, "\"read_ms\":800"));
    free(j);
}
END_TEST

START_TEST(test_worklist_escalates_long_waiting_routine)
{
    const int64_t minute = 60000;
    struct cxr_triage_study_row rows[] = {
        study("old-routine", CXR_TRIAGE_PRIORITY_ROUTINE, 0.05, 0),
        study("new-priority", CXR_TRIAGE_PRIORITY_PRIORITY, 0.70, 50 * minute),
        study("new-routine", CXR_TRIAGE_PRIORITY_ROUTINE, 0.40, 55 * minute),
        study("old-unanalysed", CXR_TRIAGE_PRIORITY_NOT_ANALYSED, NAN, 0),
        study("urgent", CXR_TRIAGE_PRIORITY_URGENT, 0.95, 59 * minute),
    };
    struct cxr_triage_worklist_options o;
    cxr_triage_worklist_options_init(&o, 60 * minute);
    o.max_wait_minutes = 30;
    struct cxr_triage_worklist_entry e[5];
    cxr_triage_worklist_order(rows, 5, &o, e);
    ck_assert_str_eq(e[0].study->study_instance_uid, "urgent");
    ck_assert_str_eq(e[1].study->study_instance_uid, "new-priority"); /* higher score */
    ck_assert_str_eq(e[2].study->study_instance_uid, "old-routine");
    ck_assert(e[2].escalated);
    ck_assert_int_eq(e[2].priority, CXR_TRIAGE_PRIORITY_PRIORITY);
    ck_assert_str_eq(e[3].study->study_instance_uid, "new-routine");
    ck_assert(!e[3].escalated);
    ck_assert_str_eq(e[4].study->study_instance_uid, "old-unanalysed");
    ck_assert(!e[4].escalated);
    /* Without a maximum nothing is escalated. */
    o.max_wait_minutes = 0;
    cxr_triage_worklist_order(rows, 5, &o, e);
    for (int i = 0; i < 5; i++)
        ck_assert(!e[i].escalated);
}
END_TEST

static json_object *parse(const char *text)
{
    ck_assert_ptr_nonnull(text);
    json_object *j = json_tokener_parse(text);
    ck_assert_msg(j != NULL, "not JSON: %s", text);
    return j;
}

static const char *jstr(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v))
        return NULL;
    return json_object_get_string(v);
}

START_TEST(test_worklist_json_phi_policy_and_names)
{
    struct cxr_triage_study_row rows[] = {
        study("1.2", CXR_TRIAGE_PRIORITY_ROUTINE, 0.2, 0),
        study("1.3", CXR_TRIAGE_PRIORITY_URGENT, 0.97, 10),
    };
    struct cxr_triage_worklist_options o;
    cxr_triage_worklist_options_init(&o, 60000);
    snprintf(o.priority_names[CXR_TRIAGE_PRIORITY_URGENT], 32, "STAT");
    char *text = cxr_triage_worklist_json(rows, 2, &o);
    ck_assert_msg(!strstr(text, "PATIENT-"), "patient ID leaked: %s", text);
    json_object *j = parse(text);
    json_object *list = NULL;
    ck_assert(json_object_object_get_ex(j, "studies", &list));
    ck_assert_int_eq(json_object_array_length(list), 2);
    json_object *first = json_object_array_get_idx(list, 0);
    ck_assert_str_eq(jstr(first, "study_instance_uid"), "1.3");
    ck_assert_str_eq(jstr(first, "priority"), "STAT");
    ck_assert_str_eq(jstr(first, "accession_number"), "A1.3");
    ck_assert_ptr_null(jstr(first, "patient_id"));
    json_object *w = NULL;
    ck_assert(json_object_object_get_ex(first, "waiting_s", &w));
    ck_assert_double_eq_tol(json_object_get_double(w), 59.99, 1e-9);
    json_object_put(j);
    free(text);

    o.show_patient_id = true;
    o.limit = 1;
    text = cxr_triage_worklist_json(rows, 2, &o);
    j = parse(text);
    ck_assert(json_object_object_get_ex(j, "studies", &list));
    ck_assert_int_eq(json_object_array_length(list), 1);
    ck_assert_str_eq(jstr(json_object_array_get_idx(list, 0), "patient_id"), "PATIENT-1.3");
    json_object_put(j);
    free(text);
}
END_TEST

/* ------------------------------------------------------------------ metrics */

START_TEST(test_metrics_render)
{
    struct cxr_node_metrics *m = NULL;
    ck_assert_int_eq(cxr_node_metrics_new(&m), CXR_OK);
    cxr_node_metrics_count(m, CXR_NODE_COUNT_RECEIVED, 7);
    cxr_node_metrics_count(m, CXR_NODE_COUNT_SR_DELIVERED, 2);
    cxr_node_metrics_not_analysed(m, CXR_ERR_DICOM_GATE);
    cxr_node_metrics_not_analysed(m, CXR_ERR_DICOM_GATE);
    cxr_node_metrics_not_analysed(m, CXR_ERR_DICOM_DECODE);
    cxr_node_metrics_observe(m, CXR_NODE_STAGE_INFER, 0.020);
    cxr_node_metrics_observe(m, CXR_NODE_STAGE_INFER, 0.200);
    cxr_node_metrics_observe(m, CXR_NODE_STAGE_INFER, 1000.0);
    ck_assert_uint_eq(cxr_node_metrics_get(m, CXR_NODE_COUNT_RECEIVED), 7);
    struct cxr_node_store_counts c = {.instances_pending = 3, .deliveries_dead = 4};
    char *t = cxr_node_metrics_render(m, &c, 5);
    ck_assert_ptr_nonnull(t);
    ck_assert_msg(strstr(t, "\ncxr_node_instances_received_total 7\n"), "%s", t);
    ck_assert(strstr(t, "cxr_node_sr_deliveries_total{result=\"delivered\"} 2\n"));
    ck_assert(
        strstr(t, "cxr_node_instances_not_analysed_total{reason=\"CXR_ERR_DICOM_GATE\"} 2\n"));
    ck_assert(
        strstr(t, "cxr_node_instances_not_analysed_total{reason=\"CXR_ERR_DICOM_DECODE\"} 1\n"));
    ck_assert(strstr(t, "\ncxr_node_queue_instances 3\n"));
    ck_assert(strstr(t, "\ncxr_node_dead_letters 4\n"));
    ck_assert(strstr(t, "\ncxr_node_queue_in_memory 5\n"));
    /* Cumulative buckets: 0.025 holds one, 0.25 two, +Inf all three. */
    ck_assert(strstr(t, "cxr_node_stage_seconds_bucket{stage=\"infer\",le=\"0.01\"} 0\n"));
    ck_assert(strstr(t, "cxr_node_stage_seconds_bucket{stage=\"infer\",le=\"0.025\"} 1\n"));
    ck_assert(strstr(t, "cxr_node_stage_seconds_bucket{stage=\"infer\",le=\"0.25\"} 2\n"));
    ck_assert(strstr(t, "cxr_node_stage_seconds_bucket{stage=\"infer\",le=\"300\"} 2\n"));
    ck_assert(strstr(t, "cxr_node_stage_seconds_bucket{stage=\"infer\",le=\"+Inf\"} 3\n"));
    ck_assert(strstr(t, "cxr_node_stage_seconds_count{stage=\"infer\"} 3\n"));
    ck_assert(strstr(t, "cxr_node_stage_seconds_sum{stage=\"infer\"} 1000.220000\n"));
    ck_assert(strstr(t, "# TYPE cxr_node_stage_seconds histogram\n"));
    /* Every sample line is "name{labels} value" or "name value". */
    char *copy = strdup(t), *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#')
            continue;
        ck_assert_msg(!strncmp(line, "cxr_node_", 9), "bad line: %s", line);
        ck_assert_msg(strchr(line, ' ') != NULL, "bad line: %s", line);
    }
    free(copy);
    free(t);
    cxr_node_metrics_free(m);
    cxr_node_metrics_free(NULL);
}
END_TEST

/* ------------------------------------------------------------------ HTTP */

/* Sends `req` as it is to the endpoint on loopback and returns the whole
 * answer (malloc'd, caller frees) with *status the HTTP status. */
static char *http_exchange(uint16_t port, const char *req, int *status)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    size_t n = strlen(req);
    ck_assert_int_eq(write(fd, req, n), (ssize_t)n);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while ((r = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)r;
        if (len + 1 >= cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
    }
    buf[len] = '\0';
    close(fd);
    *status = 0;
    sscanf(buf, "HTTP/1.%*d %d", status);
    return buf;
}

/* A minimal HTTP/1.0 GET (or `method`); returns the status and the body (malloc'd). */
static int http_get(uint16_t port, const char *method, const char *path, char **body, char *ctype,
                    size_t ctlen)
{
    char req[512];
    snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: localhost\r\n\r\n", method, path);
    int status;
    char *buf = http_exchange(port, req, &status);
    if (ctype) {
        ctype[0] = '\0';
        char *h = strcasestr(buf, "\r\nContent-Type: ");
        if (h) {
            h += 16;
            size_t k = strcspn(h, "\r\n");
            snprintf(ctype, ctlen, "%.*s", (int)k, h);
        }
    }
    char *sep = strstr(buf, "\r\n\r\n");
    *body = strdup(sep ? sep + 4 : "");
    free(buf);
    return status;
}

/* The status of a GET of `path` sent with Host header `host` (NULL: none). */
static int http_status_with_host(uint16_t port, const char *host, const char *path)
{
    char req[512];
    if (host)
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path,
                 host);
    else
        snprintf(req, sizeof req, "GET %s HTTP/1.0\r\n\r\n", path);
    int status;
    free(http_exchange(port, req, &status));
    return status;
}

/* The status of a raw request (method, path, extra header lines "K: v\r\n"
 * or "", a body or ""), HTTP/1.1 to localhost. */
static int http_raw(uint16_t port, const char *method, const char *path, const char *headers,
                    const char *body)
{
    char req[1024];
    snprintf(req, sizeof req,
             "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n%s"
             "Content-Length: %zu\r\n\r\n%s",
             method, path, headers, strlen(body), body);
    int status;
    free(http_exchange(port, req, &status));
    return status;
}

/* The head of the answer to GET `path` (status line and headers) into buf. */
static void http_head(uint16_t port, const char *path, char *buf, size_t size)
{
    char req[512];
    snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
    int status;
    char *all = http_exchange(port, req, &status);
    char *end = strstr(all, "\r\n\r\n");
    if (end)
        *end = '\0';
    snprintf(buf, size, "%s", all);
    free(all);
}

/* The "read" member of study `uid` in GET /worklist (-1 when absent). */
static int worklist_read(uint16_t port, const char *uid);

static char *extra_text(void *ctx)
{
    (void)ctx;
    return strdup("cxr_node_extra_test 42\n");
}

static void fill_options(void *ctx, struct cxr_triage_worklist_options *o)
{
    o->max_wait_minutes = 0;
    o->window_hours = 0;
    o->show_patient_id = *(bool *)ctx;
}

static int worklist_read(uint16_t port, const char *uid)
{
    char *body = NULL;
    ck_assert_int_eq(http_get(port, "GET", "/worklist", &body, NULL, 0), 200);
    json_object *j = json_tokener_parse(body), *list = NULL;
    ck_assert_ptr_nonnull(j);
    ck_assert(json_object_object_get_ex(j, "studies", &list));
    int found = -1;
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        json_object *e = json_object_array_get_idx(list, i), *v = NULL;
        json_object *u = NULL;
        if (json_object_object_get_ex(e, "study_instance_uid", &u) &&
            !strcmp(json_object_get_string(u), uid) && json_object_object_get_ex(e, "read", &v))
            found = json_object_get_boolean(v);
    }
    json_object_put(j);
    free(body);
    return found;
}

START_TEST(test_http_endpoints)
{
    char *tmp = cxr_test_tmpdir();
    char path[4096], err[CXR_ERRLEN] = "";
    snprintf(path, sizeof path, "%s/jobs.sqlite", tmp);
    struct cxr_node_store *s = NULL;
    ck_assert_int_eq(cxr_node_store_open_sqlite(path, false, &s, err), CXR_OK);
    /* Two studies: one urgent image; one routine image plus a lateral not analysed. */
    const char *uids[] = {"1.2.1", "1.2.2", "1.2.3"};
    const char *studies[] = {"9.1", "9.2", "9.2"};
    const double p[] = {0.97, 0.2, NAN};
    const int prio[] = {CXR_TRIAGE_PRIORITY_URGENT, CXR_TRIAGE_PRIORITY_ROUTINE, -1};
    for (int i = 0; i < 3; i++) {
        struct cxr_triage_instance_row row;
        memset(&row, 0, sizeof row);
        snprintf(row.sop_instance_uid, sizeof row.sop_instance_uid, "%s", uids[i]);
        row.received_ms = 1000 + i;
        bool dup;
        int64_t id;
        ck_assert_int_eq(add_instance(s, &row, NULL, 0, &dup, &id), CXR_OK);
        struct cxr_triage_result r;
        memset(&r, 0, sizeof r);
        snprintf(r.info.study_instance_uid, sizeof r.info.study_instance_uid, "%s", studies[i]);
        snprintf(r.info.patient_id, sizeof r.info.patient_id, "SECRET-PID");
        r.analysed = prio[i] >= 0;
        r.probability = p[i];
        r.priority = prio[i] >= 0 ? prio[i] : CXR_TRIAGE_PRIORITY_NOT_ANALYSED;
        r.status = r.analysed ? CXR_OK : CXR_ERR_DICOM_GATE;
        snprintf(r.reason, sizeof r.reason, "%s",
                 r.analysed ? "" : "lateral view (ViewPosition LL)");
        struct cxr_node_store_outcome o = {.instance_id = id, .result = &r, .has_info = true};
        ck_assert_int_eq(cxr_node_store_record(s, &o, 1, 2000), CXR_OK);
    }
    struct cxr_node_metrics *m = NULL;
    ck_assert_int_eq(cxr_node_metrics_new(&m), CXR_OK);
    cxr_node_metrics_count(m, CXR_NODE_COUNT_RECEIVED, 3);
    bool show_pid = false;
    struct cxr_node_http_source src = {.store = s,
                                       .metrics = m,
                                       .options = fill_options,
                                       .extra_metrics = extra_text,
                                       .ctx = &show_pid,
                                       .allowed_hosts = "reading.example.org  pacs-gw"};
    struct cxr_node_http *h = NULL;
    ck_assert_msg(cxr_node_http_start("127.0.0.1", 0, &src, &h, err) == CXR_OK, "%s", err);
    uint16_t port = cxr_node_http_port(h);
    ck_assert_int_gt(port, 0);

    /* issue 14: the Host header must name this server (DNS rebinding) */
    const struct {
        const char *host;
        int status;
    } hosts[] = {
        {"127.0.0.1:8090", 200},
        {"127.0.0.1", 200},
        {"[::1]:8090", 200},
        {"LOCALHOST:1", 200},
        {"reading.example.org", 200},
        {"Reading.Example.Org:443", 200},
        {"pacs-gw", 200},
        {NULL, 200}, /* HTTP/1.0 without Host */
        {"evil.example", 421},
        {"evil.example:8090", 421},
        {"reading.example.org.evil.example", 421},
        {"example.org", 421},
        {"127.0.0.1:80:80", 421},
        {"[::1", 421},
        {"::1", 421},
        {"localhost:x", 421},
    };
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++)
        ck_assert_msg(http_status_with_host(port, hosts[i].host, "/healthz") == hosts[i].status,
                      "Host %s: want %d", hosts[i].host ? hosts[i].host : "(none)",
                      hosts[i].status);

    char *body = NULL, ct[128];
    ck_assert_int_eq(http_get(port, "GET", "/healthz", &body, ct, sizeof ct), 200);
    ck_assert_str_eq(body, "ok\n");
    free(body);

    ck_assert_int_eq(http_get(port, "GET", "/worklist", &body, ct, sizeof ct), 200);
    ck_assert_str_eq(ct, "application/json");
    ck_assert_msg(!strstr(body, "SECRET-PID"), "patient ID served without permission: %s", body);
    json_object *j = parse(body), *list = NULL;
    ck_assert(json_object_object_get_ex(j, "studies", &list));
    ck_assert_int_eq(json_object_array_length(list), 2);
    ck_assert_str_eq(jstr(json_object_array_get_idx(list, 0), "study_instance_uid"), "9.1");
    ck_assert_str_eq(jstr(json_object_array_get_idx(list, 0), "priority"), "URGENT");
    ck_assert_str_eq(jstr(json_object_array_get_idx(list, 1), "priority"), "ROUTINE");
    json_object_put(j);
    free(body);

    show_pid = true;
    ck_assert_int_eq(http_get(port, "GET", "/worklist?limit=1", &body, NULL, 0), 200);
    j = parse(body);
    ck_assert(json_object_object_get_ex(j, "studies", &list));
    ck_assert_int_eq(json_object_array_length(list), 1);
    ck_assert_str_eq(jstr(json_object_array_get_idx(list, 0), "patient_id"), "SECRET-PID");
    json_object_put(j);
    free(body);

    ck_assert_int_eq(http_get(port, "GET", "/studies/9.2", &body, NULL, 0), 200);
    j = parse(body);
    ck_assert(json_object_object_get_ex(j, "instances", &list));
    ck_assert_int_eq(json_object_array_length(list), 2);
    json_object *lat = json_object_array_get_idx(list, 1);
    ck_assert_str_eq(jstr(lat, "state"), "not_analysed");
    ck_assert_str_eq(jstr(lat, "reason"), "lateral view (ViewPosition LL)");
    ck_assert_str_eq(jstr(lat, "status"), "CXR_ERR_DICOM_GATE");
    ck_assert_str_eq(jstr(json_object_array_get_idx(list, 0), "state"), "analysed");
    json_object_put(j);
    free(body);

    ck_assert_int_eq(http_get(port, "GET", "/studies/9.9", &body, NULL, 0), 404);
    free(body);

    /* issue 14: the page and the JSON may not be framed by another site,
     * sniffed or loaded with scripts from elsewhere */
    const char *paths[] = {"/ui/index.html", "/worklist", "/studies/9.9"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        char head[8192];
        http_head(port, paths[i], head, sizeof head);
        ck_assert_msg(strcasestr(head, "\r\nX-Frame-Options: DENY"), "%s: %s", paths[i], head);
        ck_assert_msg(strcasestr(head, "\r\nX-Content-Type-Options: nosniff"), "%s", paths[i]);
        ck_assert_msg(strcasestr(head, "\r\nContent-Security-Policy: default-src 'none'"), "%s",
                      paths[i]);
        ck_assert_msg(strstr(head, "frame-ancestors 'none'"), "%s", paths[i]);
    }

    /* issue 16: a reader marks a study read, or unread; only as JSON (a
     * page of another site cannot send that without a preflight) */
    const char *json = "Content-Type: application/json\r\n";
    ck_assert_int_eq(worklist_read(port, "9.2"), 0);
    ck_assert_int_eq(http_raw(port, "POST", "/studies/9.2/read", "", ""), 415);
    ck_assert_int_eq(http_raw(port, "POST", "/studies/9.2/read",
                              "Content-Type: application/x-www-form-urlencoded\r\n", "a=b"),
                     415);
    ck_assert_int_eq(worklist_read(port, "9.2"), 0);
    ck_assert_int_eq(http_raw(port, "POST", "/studies/9.2/read", json, "{}"), 200);
    ck_assert_int_eq(worklist_read(port, "9.2"), 1);
    ck_assert_int_eq(worklist_read(port, "9.1"), 0);
    ck_assert_int_eq(http_raw(port, "POST", "/studies/9.9/read", json, "{}"), 404);
    ck_assert_int_eq(http_raw(port, "POST", "/studies/9.2/nothing", json, "{}"), 404);
    ck_assert_int_eq(http_raw(port, "POST", "/studies/9.2/unread", json, ""), 200);
    ck_assert_int_eq(worklist_read(port, "9.2"), 0);
    ck_assert_int_eq(http_get(port, "GET", "/studies/..%2F..%2Fetc", &body, NULL, 0), 400);
    free(body);
    ck_assert_int_eq(http_get(port, "POST", "/worklist", &body, NULL, 0), 405);
    free(body);
    ck_assert_int_eq(http_get(port, "GET", "/nothing", &body, NULL, 0), 404);
    free(body);

    ck_assert_int_eq(http_get(port, "GET", "/metrics", &body, ct, sizeof ct), 200);
    ck_assert_msg(!strncmp(ct, "text/plain; version=0.0.4", 25), "content type %s", ct);
    ck_assert(strstr(body, "\ncxr_node_instances_received_total 3\n"));
    ck_assert(strstr(body, "\ncxr_node_queue_studies_awaiting_report 2\n"));
    ck_assert_msg(strstr(body, "\ncxr_node_extra_test 42\n"), "extra metrics not appended");
    free(body);

    cxr_node_http_stop(h);
    cxr_node_http_stop(NULL);
    /* A second server cannot take a port in use: a clear error. */
    struct cxr_node_http *h1 = NULL, *h2 = NULL;
    ck_assert_int_eq(cxr_node_http_start("127.0.0.1", 0, &src, &h1, err), CXR_OK);
    ck_assert_int_ne(cxr_node_http_start("127.0.0.1", cxr_node_http_port(h1), &src, &h2, err),
                     CXR_OK);
    ck_assert_ptr_null(h2);
    ck_assert_msg(strstr(err, "http/port"), "err: %s", err);
    ck_assert_int_eq(cxr_node_http_start("not-an-address", 0, &src, &h2, err), CXR_ERR_INVALID_ARG);
    cxr_node_http_stop(h1);
    cxr_node_metrics_free(m);
    cxr_node_store_close(s);
    cxr_test_rmtree(tmp);
    free(tmp);
}
END_TEST

/* ------------------------------------------------------------------ settings */

static struct cxr_conf *conf_from(const char *xml)
{
    struct cxr_conf *c = NULL;
    char err[CXR_ERRLEN] = "";
    ck_assert_msg(cxr_conf_load_memory(xml, strlen(xml), "t.xml", &c, err) == CXR_OK, "%s", err);
    return c;
}

START_TEST(test_settings_defaults)
{
    struct cxr_node_settings s;
    cxr_node_settings_defaults(&s);
    ck_assert_str_eq(s.ae_title, "CXRTRIAGE");
    ck_assert_str_eq(s.bind_address, "127.0.0.1");
    ck_assert_int_eq(s.port, 11112);
    ck_assert(s.check_called_ae);
    ck_assert(!s.tls_enabled);
    ck_assert_int_eq(s.study_stable_s, 5);
    ck_assert(s.http_enabled);
    ck_assert_str_eq(s.http_bind_address, "127.0.0.1");
    ck_assert_int_eq(s.http_port, 8090);
    ck_assert(!s.worklist_show_patient_id);
    ck_assert_uint_eq(s.destination_count, 0);
    ck_assert_uint_eq(s.allowed_peer_count, 0);
    ck_assert_uint_ge(s.retry_cap_s, s.retry_base_s);
}
END_TEST

/* node/worker-threads 0 is automatic: one worker per CPU within 2..8 (it was
 * always 2, whatever the machine); a set value is kept (capped at 64). */
START_TEST(test_settings_workers_automatic)
{
    struct cxr_node_settings s;
    cxr_node_settings_defaults(&s);
    ck_assert_int_eq(s.worker_threads, 0);
    ck_assert_int_eq(cxr_node_settings_workers(&s, 1), 2);
    ck_assert_int_eq(cxr_node_settings_workers(&s, 2), 2);
    ck_assert_int_eq(cxr_node_settings_workers(&s, 6), 6);
    ck_assert_int_eq(cxr_node_settings_workers(&s, 16), 8);
    ck_assert_int_eq(cxr_node_settings_workers(&s, 128), 8);
    s.worker_threads = 3;
    ck_assert_int_eq(cxr_node_settings_workers(&s, 16), 3);
    s.worker_threads = 500;
    ck_assert_int_eq(cxr_node_settings_workers(&s, 16), 64);
}
END_TEST

START_TEST(test_settings_from_conf)
{
    /* A config file in a folder: relative paths resolve against it. */
    char *tmp = cxr_test_tmpdir();
    char path[4096];
    snprintf(path, sizeof path, "%s/node.xml", tmp);
    const char *xml =
        "<cxr-triage><node><ae-title>TRI</ae-title><spool-dir>spool</spool-dir>"
        "<tls>true</tls><tls-certificate>c.pem</tls-certificate><tls-private-key>/k.pem</tls-private-key>"
        "</node>"
        "<allow><ae-title>CR01</ae-title></allow><allow><host>10.0.0.0/8</host></allow>"
        "<destination><ae-title>PACS</ae-title><host>pacs.local</host><port>104</port></destination>"
        "<destination><name>archive</name><host>10.1.1.1</host><calling-ae-title>TRI2</calling-ae-title>"
        "<tls>true</tls></destination></cxr-triage>";
    ck_assert(cxr_test_write_file(path, xml, strlen(xml)));
    struct cxr_conf *c = NULL;
    char err[CXR_ERRLEN] = "";
    ck_assert_msg(cxr_conf_load(path, &c, err) == CXR_OK, "%s", err);
    struct cxr_node_settings s;
    ck_assert_msg(cxr_node_settings_from_conf(c, &s, err) == CXR_OK, "%s", err);
    char want[4200];
    char *real = realpath(tmp, NULL);
    snprintf(want, sizeof want, "%s/spool", real);
    ck_assert_str_eq(s.spool_dir, want);
    snprintf(want, sizeof want, "%s/c.pem", real);
    ck_assert_str_eq(s.tls_certificate, want);
    ck_assert_str_eq(s.tls_private_key, "/k.pem");
    free(real);
    ck_assert_str_eq(s.ae_title, "TRI");
    ck_assert_uint_eq(s.allowed_peer_count, 2);
    ck_assert_str_eq(s.allowed_peers[0].ae_title, "CR01");
    ck_assert_str_eq(s.allowed_peers[1].host, "10.0.0.0/8");
    ck_assert_uint_eq(s.destination_count, 2);
    ck_assert_str_eq(s.destinations[0].name, "PACS@pacs.local:104"); /* derived */
    ck_assert_str_eq(s.destinations[1].name, "archive");
    ck_assert_str_eq(s.destinations[1].calling_ae_title, "TRI2");
    ck_assert(s.destinations[1].tls);
    /* The SCU target: own AE unless the destination names one; TLS files from node/. */
    cxr_conf_free(c);
    cxr_test_rmtree(tmp);
    free(tmp);
}
END_TEST

START_TEST(test_settings_refused)
{
    static const struct {
        const char *xml;
        const char *must;
    } cases[] = {
        {"<cxr-triage><node><tls>true</tls></node></cxr-triage>", "tls-certificate"},
        {"<cxr-triage><node><tls-verify-peer>true</tls-verify-peer></node></cxr-triage>",
         "tls-ca-certificates"},
        {"<cxr-triage><node><retry-base-seconds>60</retry-base-seconds>"
         "<retry-cap-seconds>5</retry-cap-seconds></node></cxr-triage>",
         "retry-cap-seconds"},
        {"<cxr-triage><destination><name>a</name></destination>"
         "<destination><name>a</name><port>11</port></destination></cxr-triage>",
         "named 'a'"},
        {"<cxr-triage><destination/><destination/></cxr-triage>", "named 'PACS@127.0.0.1:104'"},
        {"<cxr-triage><allow/></cxr-triage>", "neither an ae-title nor a host"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct cxr_conf *c = conf_from(cases[i].xml);
        struct cxr_node_settings s;
        char err[CXR_ERRLEN] = "";
        ck_assert_int_eq(cxr_node_settings_from_conf(c, &s, err), CXR_ERR_CONF_VALUE);
        ck_assert_msg(strstr(err, cases[i].must), "case %zu: '%s' lacks '%s'", i, err,
                      cases[i].must);
        cxr_conf_free(c);
    }
}
END_TEST

/* ------------------------------------------------------------------ sd_notify */

/* A datagram socket at `path` (abstract when it starts with '@'). */
static int notify_listener(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    size_t len = strlen(path);
    memcpy(a.sun_path, path, len);
    if (path[0] == '@')
        a.sun_path[0] = '\0';
    ck_assert_int_eq(
        bind(fd, (struct sockaddr *)&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)),
        0);
    return fd;
}

START_TEST(test_sd_notify)
{
    unsetenv("NOTIFY_SOCKET");
    ck_assert(!cxr_node_sd_notify("READY=1")); /* not under systemd: nothing to do */
    char *tmp = cxr_test_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/notify.sock", tmp);
    const char *paths[] = {path, "@cxr-triage-test-notify"};
    for (int i = 0; i < 2; i++) {
        int fd = notify_listener(paths[i]);
        setenv("NOTIFY_SOCKET", paths[i], 1);
        ck_assert(cxr_node_sd_notify("READY=1\nSTATUS=serving"));
        char buf[128] = "";
        ssize_t n = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
        ck_assert_int_eq(n, 22);
        buf[n] = '\0';
        ck_assert_str_eq(buf, "READY=1\nSTATUS=serving");
        close(fd);
    }
    unsetenv("NOTIFY_SOCKET");
    cxr_test_rmtree(tmp);
    free(tmp);
}
END_TEST

/* ------------------------------------------------------------------ one node per spool */

/* A second lock on a spool is refused with a message that names the folder,
 * the holder's pid and what to do, whether the holder is this process or
 * another one; a holder killed with SIGKILL leaves a lock file that does not
 * block; an unlock frees the spool at once. */
START_TEST(test_spool_lock_one_holder)
{
    char *tmp = cxr_test_tmpdir();
    char err[CXR_ERRLEN] = "", pidtext[32];
    struct cxr_node_spool_lock *a = NULL, *b = NULL;
    ck_assert_int_eq(cxr_node_spool_holder(tmp), 0);
    ck_assert_int_eq(cxr_node_spool_lock(tmp, &a, err), CXR_OK);
    ck_assert_int_eq(cxr_node_spool_holder(tmp), (long)getpid());
    ck_assert_int_eq(cxr_node_spool_lock(tmp, &b, err), CXR_ERR_TRIAGE_BUSY);
    ck_assert_ptr_null(b);
    snprintf(pidtext, sizeof pidtext, "pid %ld", (long)getpid());
    ck_assert_msg(strstr(err, tmp) && strstr(err, pidtext) &&
                      strstr(err, "another cxr-triage node") && strstr(err, "--spool"),
                  "%s", err);
    cxr_node_spool_unlock(a);
    ck_assert_int_eq(cxr_node_spool_lock(tmp, &b, err), CXR_OK);
    cxr_node_spool_unlock(b);
    cxr_node_spool_unlock(NULL);

    /* another process holds it, then dies by SIGKILL */
    int ready[2];
    ck_assert_int_eq(pipe(ready), 0);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        struct cxr_node_spool_lock *c = NULL;
        char cerr[CXR_ERRLEN];
        char ok = cxr_node_spool_lock(tmp, &c, cerr) == CXR_OK ? 'y' : 'n';
        if (write(ready[1], &ok, 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    close(ready[1]);
    char ok = 0;
    ck_assert_int_eq(read(ready[0], &ok, 1), 1);
    close(ready[0]);
    ck_assert_int_eq(ok, 'y');
    ck_assert_int_eq(cxr_node_spool_lock(tmp, &b, err), CXR_ERR_TRIAGE_BUSY);
    snprintf(pidtext, sizeof pidtext, "pid %ld", (long)child);
    ck_assert_msg(strstr(err, pidtext), "%s", err);
    ck_assert_int_eq(cxr_node_spool_holder(tmp), (long)child);
    kill(child, SIGKILL);
    ck_assert_int_eq(waitpid(child, NULL, 0), child);
    ck_assert_int_eq(cxr_node_spool_holder(tmp), 0); /* the file names a dead pid */
    ck_assert_int_eq(cxr_node_spool_lock(tmp, &b, err), CXR_OK);
    cxr_node_spool_unlock(b);
    cxr_test_rmtree(tmp);
    free(tmp);
}
END_TEST

static Suite *node_suite(void)
{
    Suite *s = suite_create("triage_node");
    TCase *tc = tcase_create("backoff");
    tcase_add_test(tc, test_backoff_grows_to_cap_with_jitter);
    suite_add_tcase(s, tc);
    tc = tcase_create("worklist");
    tcase_add_test(tc, test_worklist_order);
    tcase_add_test(tc, test_worklist_warned_after_unwarned);
    tcase_add_test(tc, test_study_read_until_new_image);
    tcase_add_test(tc, test_worklist_escalates_long_waiting_routine);
    tcase_add_test(tc, test_worklist_json_phi_policy_and_names);
    suite_add_tcase(s, tc);
    tc = tcase_create("metrics");
    tcase_add_test(tc, test_metrics_render);
    suite_add_tcase(s, tc);
    tc = tcase_create("settings");
    tcase_add_test(tc, test_settings_defaults);
    tcase_add_test(tc, test_settings_workers_automatic);
    tcase_add_test(tc, test_settings_from_conf);
    tcase_add_test(tc, test_settings_refused);
    suite_add_tcase(s, tc);
    tc = tcase_create("sd_notify");
    tcase_add_test(tc, test_sd_notify);
    suite_add_tcase(s, tc);
    tc = tcase_create("http");
    tcase_add_test(tc, test_http_endpoints);
    suite_add_tcase(s, tc);
    tc = tcase_create("spool_lock");
    tcase_add_test(tc, test_spool_lock_one_holder);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(node_suite()); }
