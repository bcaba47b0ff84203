
/*
 * paygw: the SQL text sent to the server.
 *
 * Statements are our own constant text with "?" placeholders.  Values
 * are rendered with mysql_real_escape_string(), which knows the
 * connection's character set (utf8mb4) and its NO_BACKSLASH_ESCAPES
 * mode, so input never changes the shape of a statement.
 */


#include "ngx_http_paygw_mysql.h"


ngx_int_t
ngx_http_paygw_sql_render(MYSQL *mysql, ngx_pool_t *pool,
    ngx_http_paygw_sql_stmt_t *stmt, ngx_str_t *out)
{
    u_char                      *p, *s, *end, quote;
    size_t                       len;
    ngx_uint_t                   i, n;
    ngx_http_paygw_sql_param_t  *param;

    param = stmt->params.elts;

    /* the worst case: every byte escaped, plus quotes */

    len = stmt->sql.len + 1;

    for (i = 0; i < stmt->params.nelts; i++) {
        len += (param[i].type == NGX_HTTP_PAYGW_SQL_STR)
               ? 2 * param[i].str.len + 2 : NGX_INT64_LEN + 4;
    }

    out->data = ngx_pnalloc(pool, len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    p = out->data;
    s = stmt->sql.data;
    end = s + stmt->sql.len;
    n = 0;
    quote = 0;

    for ( /* void */ ; s < end; s++) {

        /* a "?" inside a quoted literal or identifier is just text */

        if (quote) {
            if (*s == quote) {
                quote = 0;

            } else if (*s == '\\' && quote != '`' && s + 1 < end) {
                *p++ = *s++;
            }

            *p++ = *s;
            continue;
        }

        if (*s == '\'' || *s == '"' || *s == '`') {
            quote = *s;
            *p++ = *s;
            continue;
        }

        if (*s != '?') {
            *p++ = *s;
            continue;
        }

        if (n == stmt->params.nelts) {
            return NGX_ERROR;
        }

        switch (param[n].type) {

        case NGX_HTTP_PAYGW_SQL_INT:
            p = ngx_sprintf(p, "%L", param[n].num);
            break;

        case NGX_HTTP_PAYGW_SQL_STR:
            *p++ = '\'';
            p += mysql_real_escape_string(mysql, (char *) p,
                                          (char *) param[n].str.data,
                                          param[n].str.len);
            *p++ = '\'';
            break;

        default: /* NGX_HTTP_PAYGW_SQL_NULL */
            p = ngx_cpymem(p, "NULL", 4);
        }

        n++;
    }

    if (n != stmt->params.nelts) {
        return NGX_ERROR;
    }

    *p = '\0';
    out->len = p - out->data;

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_sql_store_result(MYSQL_RES *res, ngx_pool_t *pool,
    ngx_http_paygw_sql_stmt_t *stmt)
{
    ngx_str_t      *v, name;
    MYSQL_ROW       row;
    ngx_uint_t      i;
    MYSQL_FIELD    *field;
    unsigned long  *lengths;

    stmt->nfields = mysql_num_fields(res);
    stmt->nrows = (ngx_uint_t) mysql_num_rows(res);

    stmt->fields = ngx_palloc(pool, stmt->nfields * sizeof(ngx_str_t) + 1);
    stmt->values = ngx_palloc(pool, stmt->nrows * stmt->nfields
                                    * sizeof(ngx_str_t) + 1);
    if (stmt->fields == NULL || stmt->values == NULL) {
        return NGX_ERROR;
    }

    field = mysql_fetch_fields(res);

    for (i = 0; i < stmt->nfields; i++) {
        name.len = ngx_strlen(field[i].name);
        name.data = (u_char *) field[i].name;

        stmt->fields[i].len = name.len;
        stmt->fields[i].data = ngx_pstrdup(pool, &name);
        if (stmt->fields[i].data == NULL) {
            return NGX_ERROR;
        }
    }

    /* a stored result is in client memory: fetching does no I/O */

    v = stmt->values;

    while ((row = mysql_fetch_row(res)) != NULL) {

        lengths = mysql_fetch_lengths(res);

        for (i = 0; i < stmt->nfields; i++, v++) {

            if (row[i] == NULL) {
                ngx_str_null(v);
                continue;
            }

            v->len = lengths[i];
            v->data = ngx_pnalloc(pool, v->len + 1);
            if (v->data == NULL) {
                return NGX_ERROR;
            }

            ngx_memcpy(v->data, row[i], v->len);
            v->data[v->len] = '\0';
        }
    }

    return NGX_OK;
}
