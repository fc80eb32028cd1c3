/*
 * wa-writer: the companion daemon of ngx_http_wa_module. See wa_writer.h.
 */

#include <stdio.h>

#include "wa_writer.h"


int
main(int argc, char **argv)
{
    int        rc;
    wa_conf_t  conf;

    rc = wa_conf_parse(&conf, argc, argv);

    if (rc == -1) {
        return WA_EXIT_OK;          /* --help */
    }

    if (rc != WA_EXIT_OK) {
        return rc;
    }

    switch (conf.cmd) {

    case WA_CMD_MIGRATE:
        return wa_migrate(&conf);

    case WA_CMD_STATUS:
        return wa_show(&conf);

    case WA_CMD_BACKFILL:
        return wa_backfill(&conf);

    case WA_CMD_MEDIA:
        return wa_media(&conf);

    case WA_CMD_DEAD_LETTERS:
        return wa_dead_letters(&conf);

    case WA_CMD_RUN:
    default:
        return wa_daemon(&conf);
    }
}
