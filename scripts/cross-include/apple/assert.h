/* Stand-in for the C library header (see TargetConditionals.h beside it). */
#pragma once
#define assert(x) ((void)0)
