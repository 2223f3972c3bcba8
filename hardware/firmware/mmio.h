/* The device's address map (hardware/rtl/device_top.v). */
#ifndef MMIO_H
#define MMIO_H
#include <stdint.h>

#define REG32(a) (*(volatile uint32_t *)(a))

/* link controller (device_link.v's core_* port) */
#define LINK_REQ       REG32(0x10000000u)   /* bit 0: a request waits for the core */
#define LINK_TYPE      REG32(0x10000004u)
#define LINK_LEN       REG32(0x10000008u)
#define LINK_SESSION   REG32(0x1000000Cu)
#define LINK_STEP      REG32(0x10000010u)
#define LINK_MAXPAY    REG32(0x10000014u)
#define LINK_RSP_TYPE  REG32(0x10000018u)
#define LINK_RSP_LEN   REG32(0x1000001Cu)
#define LINK_SET_STEP  REG32(0x10000020u)   /* write: the step counter takes this value */
#define LINK_SET_READY REG32(0x10000024u)   /* write: model and weights loaded (1) or not (0) */
#define LINK_SET_RES   REG32(0x10000028u)   /* write: RESULT holds this many bytes */
#define LINK_DONE      REG32(0x1000002Cu)   /* write: the answer is in the tx buffer */
#define LINK_OUT_CRC   REG32(0x10000030u)   /* write: clear; read: CRC state of the buffer bytes written since */
#define LINK_CNT(i)    REG32(0x10000040u + 4u * (i))   /* the link's counters */

/* link buffers, byte addressed: rx (read), tx (write), staging (read), result (write) */
#define BUF_RX     0x20000000u
#define BUF_TX     0x21000000u
#define BUF_STAGE  0x22000000u
#define BUF_RESULT 0x23000000u

/* scalar fp32 unit (fp32_mul/fp32_add/fp32_div: the array's rounding) */
#define FPU_A   REG32(0x30000000u)
#define FPU_B   REG32(0x30000004u)
#define FPU_MUL REG32(0x30000008u)
#define FPU_ADD REG32(0x3000000Cu)
#define FPU_DIV REG32(0x30000010u)

/* training array registers (hardware/core_layout.py REG) and lanes */
#define CORE_REG(i)  REG32(0x40000000u + 4u * (i))
#define CORE_LANE(sel, word, lane) REG32(0x50000000u | ((uint32_t)(sel) << 24) | ((uint32_t)(word) << 8) | ((uint32_t)(lane) << 2))

/* misc */
#define CYCLES_LO  REG32(0x60000000u)
#define CYCLES_HI  REG32(0x60000004u)
#define BOOTS      REG32(0x60000008u)
#define SOFT_RESET REG32(0x6000000Cu)
#define HW_LANES   REG32(0x60000010u)
#define HW_CLOCK   REG32(0x60000014u)
#define HW_NMAX    REG32(0x60000018u)
#define BOOTCFG    0x60001000u               /* NUL-terminated text (a board's config ROM) */

#endif
