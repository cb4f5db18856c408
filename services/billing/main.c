/*
 * nf-billing: runs the descriptor bill_service (service.c) under nf_svc_main. Everything
 * else lives in bill_core (see bill.h for the map).
 */
#include "bill.h"
#include "nf_svc.h"

int main(int argc, char **argv)
{
    return nf_svc_main(&bill_service, argc, argv);
}
