#ifndef USER_TA_HEADER_DEFINES_H
#define USER_TA_HEADER_DEFINES_H
#include "ebcc_ta.h"
/* 2c7e9b14-6a3d-4f85-b0e2-9d4c1a8f5e60 */
#define TA_UUID { 0x2c7e9b14, 0x6a3d, 0x4f85, { 0xb0, 0xe2, 0x9d, 0x4c, 0x1a, 0x8f, 0x5e, 0x60 } }
#define TA_FLAGS (TA_FLAG_MULTI_SESSION)
#define TA_STACK_SIZE (4 * 1024)
#define TA_DATA_SIZE (64 * 1024)
#define TA_VERSION "1.0"
#define TA_DESCRIPTION "EBCC test stage: echoes, or fails on request (panic, error, oversized answer)"
#endif
