/* cache/registry/cert_dir.h: the CA certificates and client certificate of one registry, read from its
 * certificate directory (see cert_dir.c for where that is and what it may hold). */
#pragma once

#include <stddef.h>

struct cert_dir_tls {
	char *ca_pem;          /* the system bundle + the directory's *.crt, or NULL if none */
	size_t ca_pem_len;
	char *cert_pem;        /* client certificate (PEM), or NULL */
	size_t cert_pem_len;
	char *key_pem;         /* its key (PEM): a secret, wiped by cert_dir_tls_done() */
	size_t key_pem_len;
};

/* Reads the directory for @host ("host[:port]"): @option (--cert-dir, which must exist) or
 * the first of the per-host defaults that exists; nothing at all when there is none.  On
 * failure, the thread's message (error.h) names the file and the reason (with @domain). */
int cert_dir_load(const char *option, const char *host, const char *domain,
		  struct cert_dir_tls *ret);
void cert_dir_tls_done(struct cert_dir_tls *t);
