
/*
 * paygw: files read when the configuration is loaded (in the master,
 * where blocking reads are fine): key files, policies, and secrets
 * (passwords, shared keys: the file's first line, never in a message).
 */


#include "ngx_http_paygw.h"


char *
ngx_http_paygw_read_secret(ngx_conf_t *cf, ngx_str_t *path, const char *what,
    ngx_str_t *secret)
{
    char       *rv;
    u_char     *nl;
    size_t      n;
    ngx_str_t   file, text;

    file = *path;

    rv = ngx_http_paygw_read_file(cf, &file, what, 1023, &text);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    /* one line; the newline an editor adds is not part of it */

    n = text.len;

    nl = ngx_strlchr(text.data, text.data + n, '\n');
    if (nl) {
        n = nl - text.data;
    }

    if (n > 0 && text.data[n - 1] == '\r') {
        n--;
    }

    secret->data = ngx_pnalloc(cf->pool, n + 1);
    if (secret->data == NULL) {
        ngx_explicit_memzero(text.data, text.len);
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(secret->data, text.data, n);
    secret->data[n] = '\0';
    secret->len = n;

    /* the whole file stays in the configuration pool: wipe it */

    ngx_explicit_memzero(text.data, text.len);

    return NGX_CONF_OK;
}


char *
ngx_http_paygw_read_file(ngx_conf_t *cf, ngx_str_t *path, const char *what,
    size_t max, ngx_str_t *content)
{
    ssize_t          n;
    ngx_fd_t         fd;
    ngx_str_t        file;
    ngx_file_info_t  fi;

    file = *path;

    if (ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    fd = ngx_open_file(file.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "cannot open %s \"%s\"", what, file.data);
        return NGX_CONF_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
        || (size_t) ngx_file_size(&fi) > max)
    {
        ngx_close_file(fd);
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s \"%s\" is unreadable or over %uz bytes",
                           what, file.data, max);
        return NGX_CONF_ERROR;
    }

    content->data = ngx_pnalloc(cf->pool, ngx_file_size(&fi) + 1);
    if (content->data == NULL) {
        ngx_close_file(fd);
        return NGX_CONF_ERROR;
    }

    n = ngx_read_fd(fd, content->data, ngx_file_size(&fi));
    ngx_close_file(fd);

    if (n != (ssize_t) ngx_file_size(&fi)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "cannot read %s \"%s\"", what, file.data);
        return NGX_CONF_ERROR;
    }

    content->len = n;
    content->data[n] = '\0';

    /* messages name the full path */

    *path = file;

    return NGX_CONF_OK;
}
