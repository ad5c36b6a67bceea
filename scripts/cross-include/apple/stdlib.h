/* Stand-in for the C library header (see TargetConditionals.h beside it). */
#pragma once
#include <stddef.h>
void *malloc(size_t n);
void free(void *p);
void abort(void);
