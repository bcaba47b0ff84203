
/*
 * libFuzzer: the form codec (src/ngx_http_paygw_form.c), as Alipay's
 * callbacks and answers reach it.  Property: what decodes encodes to a
 * form that decodes to the same parameters.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_paygw_channel.h"
#include "shim.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_str_t      form, again;
    ngx_uint_t     i;
    ngx_array_t   *params, *params2;
    ngx_keyval_t  *a, *b;

    form.data = (u_char *) data;
    form.len = size;

    if (ngx_http_paygw_form_decode(NULL, &form, 64, &params) != NGX_OK) {
        fz_pool_reset();
        return 0;
    }

    if (ngx_http_paygw_form_encode(NULL, params, &again) != NGX_OK
        || ngx_http_paygw_form_decode(NULL, &again, 64, &params2) != NGX_OK
        || params2->nelts != params->nelts)
    {
        abort();
    }

    a = params->elts;
    b = params2->elts;

    for (i = 0; i < params->nelts; i++) {
        if (a[i].key.len != b[i].key.len
            || a[i].value.len != b[i].value.len
            || memcmp(a[i].key.data, b[i].key.data, a[i].key.len) != 0
            || memcmp(a[i].value.data, b[i].value.data, a[i].value.len) != 0)
        {
            abort();
        }
    }

    fz_pool_reset();

    return 0;
}
