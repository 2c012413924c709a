/* http.c — the node's HTTP endpoint (libmicrohttpd, one internal thread):
 * GET /worklist, /studies/{StudyInstanceUID}, /status, /healthz, /metrics and
 * the reading worklist page at /ui/ (cxr/ui_assets.h); POST
 * /studies/{uid}/read and /unread (a reader's mark, JSON requests only).
 * Bound to loopback unless configured otherwise.
 *
 * Hostile clients (issue 14): a request whose Host header names a host this
 * server does not answer to is refused (421), so that a web page reaching
 * the endpoint through DNS rebinding cannot read accession numbers and study
 * UIDs; IP literals and localhost always pass, other names only when listed
 * in http/allowed-hosts. Slow clients cannot hold the endpoint: at most
 * HTTP_PER_IP connections per client address, HTTP_MAX_CONNECTIONS in all,
 * and a connection idle for HTTP_IDLE_S seconds is closed. */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "cxr/log.h"
#include "cxr/node.h"
#include "cxr/ui_assets.h"

#define WORKLIST_FETCH_MAX   20000
#define HTTP_MAX_CONNECTIONS 512u
#define HTTP_PER_IP          16u
#define HTTP_IDLE_S          10u

struct cxr_node_http {
    struct MHD_Daemon *daemon;
    struct cxr_node_http_source src;
    char *allowed_hosts; /* copy of src.allowed_hosts; "" none */
    uint16_t port;
};

/* True when `host` (a Host header: name or address, optional :port) names
 * this server: an IPv4 or bracketed IPv6 literal, localhost, or a name of
 * http/allowed-hosts (case-insensitive). */
static bool host_allowed(const struct cxr_node_http *h, const char *host)
{
    char name[256];
    size_t n = strlen(host);
    if (n == 0 || n >= sizeof name)
        return false;
    if (host[0] == '[') { /* [v6]:port */
        const char *end = strchr(host, ']');
        if (!end || (end[1] != '\0' && end[1] != ':'))
            return false;
        snprintf(name, sizeof name, "%.*s", (int)(end - host - 1), host + 1);
        struct in6_addr a6;
        return inet_pton(AF_INET6, name, &a6) == 1;
    }
    const char *colon = strchr(host, ':');
    if (colon && strchr(colon + 1, ':'))
        return false; /* an unbracketed IPv6 address is not a valid Host */
    snprintf(name, sizeof name, "%.*s", (int)(colon ? (size_t)(colon - host) : n), host);
    if (colon && strspn(colon + 1, "0123456789") != strlen(colon + 1))
        return false;
    struct in_addr a4;
    if (inet_pton(AF_INET, name, &a4) == 1 || strcasecmp(name, "localhost") == 0)
        return true;
    size_t k = strlen(name);
    for (const char *p = h->allowed_hosts; *p;) {
        while (*p == ' ' || *p == '\t')
            p++;
        size_t len = strcspn(p, " \t");
        if (len == k && len > 0 && strncasecmp(p, name, k) == 0)
            return true;
        p += len;
    }
    return false;
}

/* Headers every answer carries: no framing by another site (clickjacking
 * the "read" button), no MIME sniffing, no referrer leaking study UIDs, and
 * for the page a content security policy that allows only its own files
 * and the JSON it fetches from this server. */
static void security_headers(struct MHD_Response *r)
{
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'none'; script-src 'self'; style-src 'self'; "
                            "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                            "base-uri 'none'; form-action 'none'");
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned int code, const char *type,
                             char *body /* malloc'd, taken */)
{
    if (!body) {
        code = MHD_HTTP_INTERNAL_SERVER_ERROR;
        type = "text/plain";
        body = strdup("out of memory\n");
        if (!body)
            return MHD_NO;
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    security_headers(r);
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

/* A file of the page (static bytes, not copied), or a redirect of /ui to /ui/. */
static enum MHD_Result reply_asset(struct MHD_Connection *c, const char *name)
{
    const struct cxr_ui_asset *a = cxr_ui_asset_find(name);
    if (!a) {
        char *body = strdup("{\"error\":\"no such file of the page\"}\n");
        return reply(c, MHD_HTTP_NOT_FOUND, "application/json", body);
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer(a->size, (void *)a->data, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, a->mime);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    security_headers(r);
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result redirect(struct MHD_Connection *c, const char *to)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, to);
    security_headers(r);
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_MOVED_PERMANENTLY, r);
    MHD_destroy_response(r);
    return ret;
}

static char *text(const char *fmt, const char *arg)
{
    size_t n = strlen(fmt) + (arg ? strlen(arg) : 0) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, fmt, arg ? arg : "");
    return s;
}

static char *error_json(const char *msg) { return text("{\"error\":\"%s\"}\n", msg); }

static bool valid_uid(const char *uid)
{
    size_t n = strlen(uid);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((uid[i] >= '0' && uid[i] <= '9') || uid[i] == '.'))
            return false;
    return true;
}

static void options(struct cxr_node_http *h, struct cxr_triage_worklist_options *o,
                    struct MHD_Connection *c)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    cxr_triage_worklist_options_init(o, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    if (h->src.options)
        h->src.options(h->src.ctx, o);
    const char *limit = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
    if (limit) {
        char *end = NULL;
        long v = strtol(limit, &end, 10);
        if (end && *end == '\0' && v > 0 && v <= WORKLIST_FETCH_MAX)
            o->limit = (size_t)v;
    }
}

static enum MHD_Result get_worklist(struct cxr_node_http *h, struct MHD_Connection *c)
{
    struct cxr_triage_worklist_options o;
    options(h, &o, c);
    int64_t since = o.window_hours ? o.now_ms - (int64_t)o.window_hours * 3600000 : 0;
    struct cxr_triage_study_row *rows = NULL;
    size_t n = 0;
    if (cxr_node_store_studies_list(h->src.store, since, WORKLIST_FETCH_MAX, &rows, &n) != CXR_OK) {
        cxr_log(CXR_LOG_ERROR, "http", "worklist: %s", cxr_node_store_last_error());
        return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, "application/json",
                     error_json("job store unavailable"));
    }
    char *body = cxr_triage_worklist_json(rows, n, &o);
    free(rows);
    return reply(c, MHD_HTTP_OK, "application/json", body);
}

static enum MHD_Result get_study(struct cxr_node_http *h, struct MHD_Connection *c, const char *uid)
{
    if (!valid_uid(uid))
        return reply(c, MHD_HTTP_BAD_REQUEST, "application/json",
                     error_json("not a Study Instance UID (digits and dots, at most 64)"));
    struct cxr_triage_worklist_options o;
    options(h, &o, c);
    struct cxr_triage_study_row row;
    bool found = false;
    struct cxr_triage_instance_row *inst = NULL;
    size_t n = 0;
    if (cxr_node_store_study_get(h->src.store, uid, &row, &found) != CXR_OK ||
        (found && cxr_node_store_study_instances(h->src.store, uid, &inst, &n) != CXR_OK)) {
        cxr_log(CXR_LOG_ERROR, "http", "study: %s", cxr_node_store_last_error());
        return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, "application/json",
                     error_json("job store unavailable"));
    }
    if (!found)
        return reply(c, MHD_HTTP_NOT_FOUND, "application/json", error_json("unknown study"));
    char *body = cxr_triage_study_json(&row, inst, n, &o);
    free(inst);
    return reply(c, MHD_HTTP_OK, "application/json", body);
}

/* POST /studies/{uid}/read and /studies/{uid}/unread: a reader marks the
 * study done (it leaves the page's list until a new image arrives) or not.
 * Only with Content-Type application/json: a web page of another site
 * cannot send that without a CORS preflight, which this server never
 * grants, so a page elsewhere cannot mark studies read (CSRF). */
static enum MHD_Result post_read(struct cxr_node_http *h, struct MHD_Connection *c,
                                 const char *rest)
{
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!ct || strncasecmp(ct, "application/json", 16) != 0)
        return reply(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "application/json",
                     error_json("send Content-Type: application/json"));
    char uid[80];
    const char *slash = strrchr(rest, '/');
    if (!slash || (size_t)(slash - rest) >= sizeof uid)
        return reply(c, MHD_HTTP_NOT_FOUND, "application/json", error_json("no such resource"));
    snprintf(uid, sizeof uid, "%.*s", (int)(slash - rest), rest);
    bool read = !strcmp(slash, "/read");
    if (!read && strcmp(slash, "/unread") != 0)
        return reply(c, MHD_HTTP_NOT_FOUND, "application/json",
                     error_json("no such resource (POST /studies/{uid}/read or /unread)"));
    if (!valid_uid(uid))
        return reply(c, MHD_HTTP_BAD_REQUEST, "application/json",
                     error_json("not a Study Instance UID (digits and dots, at most 64)"));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    bool found = false;
    if (cxr_node_store_study_mark_read(h->src.store, uid, read ? now : 0, &found) != CXR_OK) {
        cxr_log(CXR_LOG_ERROR, "http", "mark read: %s", cxr_node_store_last_error());
        return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, "application/json",
                     error_json("job store unavailable"));
    }
    if (!found)
        return reply(c, MHD_HTTP_NOT_FOUND, "application/json", error_json("unknown study"));
    cxr_log(CXR_LOG_INFO, "http", "study %s marked %s", uid, read ? "read" : "unread");
    return reply(c, MHD_HTTP_OK, "application/json",
                 text(read ? "{\"study_instance_uid\":\"%s\",\"read\":true}\n"
                           : "{\"study_instance_uid\":\"%s\",\"read\":false}\n",
                      uid));
}

static enum MHD_Result get_health(struct cxr_node_http *h, struct MHD_Connection *c)
{
    char why[256] = "";
    if (h->src.healthy && !h->src.healthy(h->src.ctx, why, sizeof why))
        return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain", text("unhealthy: %s\n", why));
    struct cxr_node_store_counts counts;
    if (cxr_node_store_counts(h->src.store, &counts) != CXR_OK)
        return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain",
                     text("unhealthy: job store: %s\n", cxr_node_store_last_error()));
    return reply(c, MHD_HTTP_OK, "text/plain", strdup("ok\n"));
}

static enum MHD_Result get_metrics(struct cxr_node_http *h, struct MHD_Connection *c)
{
    struct cxr_node_store_counts counts;
    bool have = cxr_node_store_counts(h->src.store, &counts) == CXR_OK;
    int64_t q = h->src.queue_depth ? h->src.queue_depth(h->src.ctx) : 0;
    char *body = cxr_node_metrics_render(h->src.metrics, have ? &counts : NULL, q);
    char *extra = body && h->src.extra_metrics ? h->src.extra_metrics(h->src.ctx) : NULL;
    if (extra) {
        size_t a = strlen(body), b = strlen(extra);
        char *both = realloc(body, a + b + 1);
        if (both) {
            memcpy(both + a, extra, b + 1);
            body = both;
        }
        free(extra);
    }
    return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    struct cxr_node_http *h = cls;
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    if (host && !host_allowed(h, host)) {
        char shown[201], msg[400];
        size_t k = 0;
        for (const char *q = host; *q && k + 1 < sizeof shown; q++) /* JSON-safe echo */
            shown[k++] = (*q >= 0x20 && *q < 0x7f && *q != '"' && *q != '\\') ? *q : '?';
        shown[k] = '\0';
        snprintf(msg, sizeof msg,
                 "this server does not answer to the host name '%s'; add it to "
                 "http/allowed-hosts",
                 shown);
        char *body = error_json(msg);
        return reply(c, 421 /* Misdirected Request */, "application/json", body);
    }
    bool post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    if (!post && strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
        strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "application/json",
                     error_json("only GET, and POST to mark a study read, are served"));
    if (*upload_data_size != 0) { /* a body: not used, read and dropped */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*con_cls == NULL && post) { /* the body, if any, comes in later calls */
        static int started;
        *con_cls = &started;
        return MHD_YES;
    }
    if (post) {
        if (!strncmp(url, "/studies/", 9))
            return post_read(h, c, url + 9);
        return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "application/json",
                     error_json("POST is served only at /studies/{uid}/read and /unread"));
    }
    if (!strcmp(url, "/worklist") || !strcmp(url, "/worklist/"))
        return get_worklist(h, c);
    if (!strncmp(url, "/studies/", 9))
        return get_study(h, c, url + 9);
    if (!strcmp(url, "/healthz"))
        return get_health(h, c);
    if (!strcmp(url, "/metrics"))
        return get_metrics(h, c);
    if (!strcmp(url, "/status")) {
        char *body = h->src.status_json ? h->src.status_json(h->src.ctx) : NULL;
        return reply(c, body ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, "application/json",
                     body ? body : error_json("status unavailable"));
    }
    if (!strcmp(url, "/") || !strcmp(url, "/ui"))
        return redirect(c, "/ui/");
    if (!strncmp(url, "/ui/", 4))
        return reply_asset(c, url + 4);
    return reply(c, MHD_HTTP_NOT_FOUND, "application/json",
                 error_json("no such resource (try /ui/, /worklist, /studies/{uid}, /status, "
                            "/healthz, /metrics)"));
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    if (n && buf[n - 1] == '\n')
        buf[n - 1] = '\0';
    cxr_log(CXR_LOG_WARN, "http", "%s", buf);
}

/* The socket address of bind_address:port: an IPv4 or IPv6 literal (a host
 * name is refused: the endpoint must not bind where a resolver says). */
static enum cxr_status bind_address_of(const char *bind_address, uint16_t port,
                                       struct sockaddr_in *a4, struct sockaddr_in6 *a6, bool *ipv6,
                                       char *err)
{
    memset(a4, 0, sizeof *a4);
    memset(a6, 0, sizeof *a6);
    const char *bind = bind_address && *bind_address ? bind_address : "127.0.0.1";
    if (inet_pton(AF_INET, bind, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        *ipv6 = false;
        return CXR_OK;
    }
    if (inet_pton(AF_INET6, bind, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        *ipv6 = true;
        return CXR_OK;
    }
    if (err)
        snprintf(err, CXR_ERRLEN,
                 "HTTP bind address '%.200s' is not an IPv4 or IPv6 address "
                 "(http/bind-address takes an address, not a host name)",
                 bind);
    return CXR_ERR_INVALID_ARG;
}

enum cxr_status cxr_node_http_check_bind(const char *bind_address, char *err)
{
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    bool ipv6;
    return bind_address_of(bind_address, 0, &a4, &a6, &ipv6, err);
}

enum cxr_status cxr_node_http_start(const char *bind_address, uint16_t port,
                                    const struct cxr_node_http_source *src,
                                    struct cxr_node_http **out, char *err)
{
    *out = NULL;
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    bool ipv6 = false;
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    enum cxr_status bst = bind_address_of(bind_address, port, &a4, &a6, &ipv6, err);
    if (bst != CXR_OK)
        return bst;
    const char *bind = bind_address && *bind_address ? bind_address : "127.0.0.1";
    struct sockaddr *addr = ipv6 ? (struct sockaddr *)&a6 : (struct sockaddr *)&a4;
    if (ipv6)
        flags |= MHD_USE_IPv6;
    struct cxr_node_http *h = calloc(1, sizeof *h);
    if (!h)
        return CXR_ERR_NOMEM;
    h->src = *src;
    h->allowed_hosts = strdup(src->allowed_hosts ? src->allowed_hosts : "");
    if (!h->allowed_hosts) {
        free(h);
        return CXR_ERR_NOMEM;
    }
    h->src.allowed_hosts = h->allowed_hosts;
    h->daemon =
        MHD_start_daemon(flags, port, NULL, NULL, handle, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
                         NULL, MHD_OPTION_SOCK_ADDR, addr, MHD_OPTION_CONNECTION_LIMIT,
                         HTTP_MAX_CONNECTIONS, MHD_OPTION_PER_IP_CONNECTION_LIMIT, HTTP_PER_IP,
                         MHD_OPTION_CONNECTION_TIMEOUT, HTTP_IDLE_S, MHD_OPTION_END);
    if (!h->daemon) {
        free(h->allowed_hosts);
        if (err)
            snprintf(err, CXR_ERRLEN,
                     "cannot serve HTTP on %s:%u (port in use, or no such address?);"
                     " change http/port or http/bind-address",
                     bind, (unsigned)port);
        free(h);
        return CXR_ERR_IO;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : port;
    *out = h;
    return CXR_OK;
}

uint16_t cxr_node_http_port(const struct cxr_node_http *h) { return h ? h->port : 0; }

void cxr_node_http_stop(struct cxr_node_http *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->daemon);
    free(h->allowed_hosts);
    free(h);
}
