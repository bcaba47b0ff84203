
/*
 * paygw: give the worker's free heap pages back to the kernel.
 *
 *     paygw_memory_trim 1s | off [mmap_threshold=32k | off];
 *                                   (http{}; default 1s and 32k with
 *                                   paygw_zone)
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
 *
 * The trim cannot help a large block that must be contiguous: a
 * round's array of events (440 bytes each, so 33-132 kB for the rounds
 * of 75-300 events that a burst brings) needs a hole of its size, which
 * the small blocks around it keep splitting, so the heap's top moves up
 * and the churn spreads over more pages.  glibc maps a block of at
 * least M_MMAP_THRESHOLD on its own and unmaps it when freed, but
 * raises that threshold to the size of every mapped block freed (up to
 * 32 MB), so that after the first big round such blocks all come from
 * the heap.  A fixed threshold (mallopt, which also ends the raising)
 * keeps them out of it.  Its price, a mapping and its page faults per
 * such block, is paid by a few blocks a second: on the bench's soak the
 * only blocks of 32 kB or more were these arrays, about one a second
 * per worker; no request on the hot path makes one.  With it the heap's
 * extent stayed within 0.2 MB of its warm-up in one soak; the floors
 * still rose in the next (README, issue 15).
 *
 * Without glibc (musl has no malloc_trim or M_MMAP_THRESHOLD) the
 * directive is accepted and does nothing.
 */


#include "ngx_http_paygw.h"
#include "ngx_http_paygw_zone.h"

#if (NGX_LINUX && defined __GLIBC__)
#include <malloc.h>
#define NGX_HTTP_PAYGW_HAVE_MALLOC_TRIM  1
#endif


#define NGX_HTTP_PAYGW_MEMORY_TRIM_DEFAULT  1000
#define NGX_HTTP_PAYGW_MEMORY_MMAP_DEFAULT  (32 * 1024)

/* glibc's bounds for M_MMAP_THRESHOLD on 64-bit systems */
#define NGX_HTTP_PAYGW_MEMORY_MMAP_MIN      4096
#define NGX_HTTP_PAYGW_MEMORY_MMAP_MAX      (32 * 1024 * 1024)


#if (NGX_HTTP_PAYGW_HAVE_MALLOC_TRIM)
static void ngx_http_paygw_memory_trim_handler(ngx_event_t *ev);
static void ngx_http_paygw_memory_publish(ngx_log_t *log,
    ngx_msec_int_t trim_us);

static ngx_event_t  ngx_http_paygw_memory_trim_event;
#endif

static char *ngx_http_paygw_memory_mmap(ngx_conf_t *cf,
    ngx_http_paygw_main_conf_t *pmcf, ngx_str_t *value);


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
        interval = 0;

    } else {
        interval = ngx_parse_time(&value[1], 0);

        if (interval == (ngx_msec_t) NGX_ERROR || interval == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\": expected an interval "
                               "such as \"1s\", or \"off\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    pmcf->memory_trim = interval;

    if (cf->args->nelts == 3) {
        if (ngx_http_paygw_memory_mmap(cf, pmcf, &value[2]) != NGX_CONF_OK) {
            return NGX_CONF_ERROR;
        }

    } else if (interval == 0) {
        /* a bare "off": the module leaves malloc as it is */
        pmcf->memory_mmap = 0;
    }

#if !(NGX_HTTP_PAYGW_HAVE_MALLOC_TRIM)
    if (interval || pmcf->memory_mmap) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "paygw_memory_trim has no effect: this C "
                           "library has no malloc_trim() or "
                           "M_MMAP_THRESHOLD");
    }
#endif

    return NGX_CONF_OK;
}


/* mmap_threshold=SIZE | off: off leaves glibc's own (moving) threshold */

static char *
ngx_http_paygw_memory_mmap(ngx_conf_t *cf, ngx_http_paygw_main_conf_t *pmcf,
    ngx_str_t *value)
{
    ssize_t    size;
    ngx_str_t  v;

    if (ngx_strncmp(value->data, "mmap_threshold=", 15) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\": expected "
                           "\"mmap_threshold=32k\" or "
                           "\"mmap_threshold=off\"", value);
        return NGX_CONF_ERROR;
    }

    /* an empty size fails ngx_parse_size() below */

    v.data = value->data + 15;
    v.len = value->len - 15;

    if (v.len == 3 && ngx_strncmp(v.data, "off", 3) == 0) {
        pmcf->memory_mmap = 0;
        return NGX_CONF_OK;
    }

    size = ngx_parse_size(&v);

    if (size < NGX_HTTP_PAYGW_MEMORY_MMAP_MIN
        || size > NGX_HTTP_PAYGW_MEMORY_MMAP_MAX)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\": mmap_threshold= takes "
                           "a size from 4k to 32m, or \"off\"", &v);
        return NGX_CONF_ERROR;
    }

    pmcf->memory_mmap = size;

    return NGX_CONF_OK;
}


/* on by default where the gateway runs (paygw_zone), not merely loaded */

void
ngx_http_paygw_memory_init_conf(ngx_http_paygw_main_conf_t *pmcf)
{
    ngx_conf_init_msec_value(pmcf->memory_trim,
                             pmcf->shm_zone
                             ? NGX_HTTP_PAYGW_MEMORY_TRIM_DEFAULT : 0);
    ngx_conf_init_size_value(pmcf->memory_mmap,
                             pmcf->shm_zone
                             ? NGX_HTTP_PAYGW_MEMORY_MMAP_DEFAULT : 0);
}


#if (NGX_HTTP_PAYGW_HAVE_MALLOC_TRIM)

ngx_int_t
ngx_http_paygw_memory_init_process(ngx_cycle_t *cycle)
{
    ngx_event_t                 *ev;
    ngx_http_paygw_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_paygw_module);

    if (pmcf == NULL
        || (ngx_process != NGX_PROCESS_WORKER
            && ngx_process != NGX_PROCESS_SINGLE))
    {
        return NGX_OK;
    }

    if (pmcf->memory_mmap) {
        if (mallopt(M_MMAP_THRESHOLD, (int) pmcf->memory_mmap) != 1) {
            ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                          "paygw memory: mallopt(M_MMAP_THRESHOLD, %uz) "
                          "failed", pmcf->memory_mmap);

        } else {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, cycle->log, 0,
                           "paygw memory: blocks of %uz bytes or more are "
                           "mapped on their own", pmcf->memory_mmap);
        }
    }

    if (pmcf->memory_trim == 0) {
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
    ngx_msec_int_t  us;
    struct timeval  start, end;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    ngx_gettimeofday(&start);
    released = malloc_trim(0);
    ngx_gettimeofday(&end);

    us = (end.tv_sec - start.tv_sec) * 1000000
         + (end.tv_usec - start.tv_usec);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "paygw memory: trimmed in %M us, pages released: %s",
                   us, released ? "yes" : "no");

    /* used only by the debug log */
    (void) released;

    ngx_http_paygw_memory_publish(ev->log, us);

    ngx_add_timer(ev, pmcf->memory_trim);
}


/*
 * The worker's arena as malloc counts it, for paygw_worker_heap_bytes:
 * mallinfo2() walks every free block, like the trim (about 4 us with
 * 1,000 free blocks, 0.5 ms with 10,000), so it is taken once per trim,
 * not per scrape; a scrape may come to any worker and reads every
 * worker's figures from the zone.
 */

static void
ngx_http_paygw_memory_publish(ngx_log_t *log, ngx_msec_int_t trim_us)
{
#if (__GLIBC_PREREQ(2, 33))
    struct mallinfo2         mi;
    ngx_http_paygw_heap_t   *heap;
    ngx_http_paygw_shctx_t  *sh;

    sh = ngx_http_paygw_shctx_cycle((ngx_cycle_t *) ngx_cycle);

    if (sh == NULL || ngx_worker >= NGX_HTTP_PAYGW_M_WORKERS) {
        return;
    }

    mi = mallinfo2();
    heap = &sh->heap[ngx_worker];

    heap->in_use = mi.uordblks;
    heap->free = mi.fordblks;
    heap->mapped = mi.hblkhd;
    heap->trim_us = trim_us;
    heap->pid = ngx_pid;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                   "paygw memory: %uz bytes in use, %uz free in the "
                   "arena, %uz mapped", mi.uordblks,
                   mi.fordblks, mi.hblkhd);
#endif
}

#else

ngx_int_t
ngx_http_paygw_memory_init_process(ngx_cycle_t *cycle)
{
    return NGX_OK;
}

#endif
