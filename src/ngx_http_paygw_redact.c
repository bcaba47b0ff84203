
/*
 * paygw: secrets never reach the error log, whatever its level.
 *
 * nginx itself logs every request header at debug level ("http header:
 * ...") and some at info, before any module sees the request; the
 * Authorization header carries a request signature, and provider calls
 * carry theirs.  Every error log the configuration uses gets, in each
 * worker, a writer that blanks those values and then writes the line to
 * the log's file exactly as nginx would.  (nginx copies a log's writer
 * into each connection's log.)  Logs that have a writer of their own
 * (syslog, memory) are left alone.
 */


#include "ngx_http_paygw.h"


static void ngx_http_paygw_redact_all(ngx_cycle_t *cycle, ngx_uint_t on);
static void ngx_http_paygw_redact_writer(ngx_log_t *log, ngx_uint_t level,
    u_char *buf, size_t len);
static void ngx_http_paygw_redact_set(ngx_log_t *log, ngx_uint_t on);
static size_t ngx_http_paygw_redact(u_char *buf, size_t len, u_char *out,
    size_t size);


typedef struct {
    const char   *name;
    size_t        len;
    u_char        end;          /* what ends the value, besides " and EOL */
} ngx_http_paygw_secret_t;


static ngx_http_paygw_secret_t  ngx_http_paygw_secrets[] = {
    { "authorization: ", sizeof("authorization: ") - 1, '\0' },
    { "x-acquirer-signature: ", sizeof("x-acquirer-signature: ") - 1, '\0' },
    { "sig=", sizeof("sig=") - 1, ',' },
    { NULL, 0, 0 }
};


ngx_int_t
ngx_http_paygw_redact_collect(ngx_conf_t *cf, ngx_http_paygw_main_conf_t *pmcf)
{
    ngx_log_t                 *log, **lp;
    ngx_uint_t                 i;
    ngx_http_core_loc_conf_t  *clcf;

    /* called from merge: the location's error_log is final by now */

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    for (log = clcf->error_log; log; log = log->next) {

        lp = pmcf->logs.elts;

        for (i = 0; i < pmcf->logs.nelts; i++) {
            if (lp[i] == log) {
                break;
            }
        }

        if (i < pmcf->logs.nelts) {
            continue;
        }

        lp = ngx_array_push(&pmcf->logs);
        if (lp == NULL) {
            return NGX_ERROR;
        }

        *lp = log;
    }

    return NGX_OK;
}


void
ngx_http_paygw_redact_init_process(ngx_cycle_t *cycle)
{
    ngx_http_paygw_redact_all(cycle, 1);
}


void
ngx_http_paygw_redact_exit_process(ngx_cycle_t *cycle)
{
    /*
     * The worker's cycle pool is destroyed after this, unloading the
     * module among its cleanups while later ones still log: no log may
     * keep a writer that points into unloaded code.
     */

    ngx_http_paygw_redact_all(cycle, 0);
}


static void
ngx_http_paygw_redact_all(ngx_cycle_t *cycle, ngx_uint_t on)
{
    ngx_log_t                   *log, **lp;
    ngx_uint_t                   i;
    ngx_listening_t             *ls;
    ngx_http_paygw_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_paygw_module);
    if (pmcf == NULL) {
        return;
    }

    lp = pmcf->logs.elts;

    for (i = 0; i < pmcf->logs.nelts; i++) {
        for (log = lp[i]; log; log = log->next) {
            ngx_http_paygw_redact_set(log, on);
        }
    }

    for (log = cycle->log; log; log = log->next) {
        ngx_http_paygw_redact_set(log, on);
    }

    /* accepted connections start with a copy of their listener's log */

    ls = cycle->listening.elts;

    for (i = 0; i < cycle->listening.nelts; i++) {
        ngx_http_paygw_redact_set(&ls[i].log, on);
    }
}


static void
ngx_http_paygw_redact_set(ngx_log_t *log, ngx_uint_t on)
{
    if (!on) {
        if (log->writer == ngx_http_paygw_redact_writer) {
            log->writer = NULL;
        }

        return;
    }

    if (log->writer == NULL && log->file && log->file->fd != NGX_INVALID_FILE)
    {
        log->writer = ngx_http_paygw_redact_writer;
    }
}


static void
ngx_http_paygw_redact_writer(ngx_log_t *log, ngx_uint_t level, u_char *buf,
    size_t len)
{
    size_t  n;
    u_char  out[NGX_MAX_ERROR_STR + 64];

    n = ngx_http_paygw_redact(buf, len, out, sizeof(out));

    (void) ngx_write_fd(log->file->fd, out, n);
}


static size_t
ngx_http_paygw_redact(u_char *buf, size_t len, u_char *out, size_t size)
{
    u_char                   *p, *last, *o, *olast;
    ngx_http_paygw_secret_t  *s;

    p = buf;
    last = buf + len;
    o = out;
    olast = out + size - sizeof("[redacted]");

    while (p < last && o < olast) {

        for (s = ngx_http_paygw_secrets; s->name; s++) {
            if ((size_t) (last - p) >= s->len
                && ngx_strncasecmp(p, (u_char *) s->name, s->len) == 0)
            {
                break;
            }
        }

        if (s->name == NULL) {
            *o++ = *p++;
            continue;
        }

        /* keep the name, blank the value */

        o = ngx_cpymem(o, p, s->len);
        p += s->len;

        while (p < last && *p != '"' && *p != '\r' && *p != '\n'
               && (s->end == '\0' || *p != s->end))
        {
            p++;
        }

        o = ngx_cpymem(o, "[redacted]", sizeof("[redacted]") - 1);
    }

    /* a line cut short still ends a line */

    if (p < last && o > out && o[-1] != '\n') {
        *o++ = '\n';
    }

    return o - out;
}
