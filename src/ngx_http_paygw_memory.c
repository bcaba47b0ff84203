
/*
 * paygw: give the worker's free heap pages back to the kernel.
 *
 *     paygw_memory_trim 1s | off;   (http{}; default 1s with paygw_zone)
 *
 * A worker's requests allocate from nginx pools, whose blocks come from
 * malloc().  Blocks of different lifetimes end up side by side: a
 * webhook delivery round keeps its subrequests' memory (about 13 kB
 * per event, up to 4 MB for a round of 300) until its last POST has
 * answered, while thousands of short requests come and go around it.
 * When the round ends, its blocks are free but sit below blocks that
 * are still in use, and glibc returns only the free top of its heap to
 * the kernel: the pages stay resident.  The memory in use does not
 * grow, yet RSS creeps up over hours, which is what a container's
 * memory limit and an operator's dashboard see.
 *
 * malloc_trim(0) hands every whole free page back (madvise), wherever
 * it lies in the heap.  Each worker calls it on a timer: every second,
 * because what a worker touches between two trims is what RSS shows
 * (every 10 s, the bench's soak still saw the floors rise 100 kB/min;
 * every second, flat in one soak of two: README, issue 15).  It takes
 * about 0.3 ms on a heap of this size, and what it releases is faulted
 * in again only when it is used.
 * Without glibc (musl has no malloc_trim) the directive is accepted and
 * does nothing.
 */


#include "ngx_http_paygw.h"

#if (NGX_LINUX && defined __GLIBC__)
#include <malloc.h>
#define NGX_HTTP_PAYGW_HAVE_MALLOC_TRIM  1
#endif


#define NGX_HTTP_PAYGW_MEMORY_TRIM_DEFAULT  1000


#if (NGX_HTTP_PAYGW_HAVE_MALLOC_TRIM)
static void ngx_http_paygw_memory_trim_handler(ngx_event_t *ev);

static ngx_event_t  ngx_http_paygw_memory_trim_event;
#endif


char *
ngx_http_paygw_memory_trim(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_paygw_main_conf_t *pmcf = conf;

    ngx_str_t   *value;
    ngx_msec_t   interval;

    if (pmcf->memory_trim != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        pmcf->memory_trim = 0;
        return NGX_CONF_OK;
    }

    interval = ngx_parse_time(&value[1], 0);

    if (interval == (ngx_msec_t) NGX_ERROR || interval == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\": expected an interval "
                           "such as \"1s\", or \"off\"", &value[1]);
        return NGX_CONF_ERROR;
    }

#if !(NGX_HTTP_PAYGW_HAVE_MALLOC_TRIM)
    ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                       "paygw_memory_trim has no effect: this C library "
                       "has no malloc_trim()");
#endif

    pmcf->memory_trim = interval;

    return NGX_CONF_OK;
}


/* on by default where the gateway runs (paygw_zone), not merely loaded */

void
ngx_http_paygw_memory_init_conf(ngx_http_paygw_main_conf_t *pmcf)
{
    ngx_conf_init_msec_value(pmcf->memory_trim,
                             pmcf->shm_zone
                             ? NGX_HTTP_PAYGW_MEMORY_TRIM_DEFAULT : 0);
}


#if (NGX_HTTP_PAYGW_HAVE_MALLOC_TRIM)

ngx_int_t
ngx_http_paygw_memory_init_process(ngx_cycle_t *cycle)
{
    ngx_event_t                 *ev;
    ngx_http_paygw_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_paygw_module);

    if (pmcf == NULL || pmcf->memory_trim == 0
        || (ngx_process != NGX_PROCESS_WORKER
            && ngx_process != NGX_PROCESS_SINGLE))
    {
        return NGX_OK;
    }

    ev = &ngx_http_paygw_memory_trim_event;

    ngx_memzero(ev, sizeof(ngx_event_t));
    ev->handler = ngx_http_paygw_memory_trim_handler;
    ev->data = pmcf;
    ev->log = cycle->log;

    /* a worker shutting down gracefully does not wait for it */
    ev->cancelable = 1;

    ngx_add_timer(ev, pmcf->memory_trim);

    return NGX_OK;
}


static void
ngx_http_paygw_memory_trim_handler(ngx_event_t *ev)
{
    ngx_http_paygw_main_conf_t *pmcf = ev->data;

    int             released;
    struct timeval  start, end;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    ngx_gettimeofday(&start);
    released = malloc_trim(0);
    ngx_gettimeofday(&end);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "paygw memory: trimmed in %l us, pages released: %s",
                   (long) ((end.tv_sec - start.tv_sec) * 1000000
                           + (end.tv_usec - start.tv_usec)),
                   released ? "yes" : "no");

    /* used only by the debug log */
    (void) released;
    (void) start;
    (void) end;

    ngx_add_timer(ev, pmcf->memory_trim);
}

#else

ngx_int_t
ngx_http_paygw_memory_init_process(ngx_cycle_t *cycle)
{
    return NGX_OK;
}

#endif
