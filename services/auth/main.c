/*
 * nf-auth: runs the descriptor auth_service (service.c) under nf_svc_main. Everything else
 * lives in auth_core (see auth.h for the map).
 */
#include "auth.h"
#include "nf_svc.h"

int main(int argc, char **argv)
{
    return nf_svc_main(&auth_service, argc, argv);
}
