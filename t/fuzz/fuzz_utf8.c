
/*
 * libFuzzer: the UTF-8 helpers (src/ngx_http_paygw_utf8.c) on any bytes.
 * Properties: repair() leaves valid UTF-8 no longer than the input;
 * valid() agrees with repair() leaving the text as it was; quote() gives
 * at most max + 3 bytes of valid UTF-8.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_paygw.h"
#include "shim.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char     *copy;
    size_t      n, max;
    ngx_str_t   out;

    copy = malloc(size + 1);
    if (copy == NULL) {
        return 0;
    }

    memcpy(copy, data, size);

    n = ngx_http_paygw_utf8_repair(copy, size);

    if (n > size || ngx_http_paygw_utf8_valid(copy, n) != NGX_OK) {
        abort();
    }

    if (ngx_http_paygw_utf8_valid((u_char *) data, size) == NGX_OK
        && (n != size || memcmp(copy, data, size) != 0))
    {
        abort();
    }

    max = size ? data[0] : 0;

    ngx_http_paygw_utf8_quote(NULL, (u_char *) data, size, max, &out);

    if (out.len > max + 3
        || ngx_http_paygw_utf8_valid(out.data, out.len) != NGX_OK)
    {
        abort();
    }

    free(copy);
    fz_pool_reset();

    return 0;
}
