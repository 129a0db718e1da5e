/*
 * frame_machine.h: a foreign frame (coro_spawn_frame) written by hand in C,
 * as a switch-based state machine (Duff's device), for foreign.c and
 * chaos.c.
 *
 *   FRAME_BEGIN(f) ... FRAME_END(f)   the body of the frame's resume
 *   WAIT(f, call)                     runs `call`; if it answers CORO_PENDING,
 *                                     resume returns and the machine goes on
 *                                     here when resumed, with f->rc set to
 *                                     coro_frame_resumed's answer (and
 *                                     f->value to an await's value);
 *                                     otherwise f->rc is the call's answer
 *
 * The frame struct starts with `int line, rc; void *value;` (line 0: not
 * started). WAIT's case labels must belong to FRAME_BEGIN's switch: no
 * other switch may enclose a WAIT.
 */
#ifndef COFRAME_FFI_TESTS_FRAME_MACHINE_H
#define COFRAME_FFI_TESTS_FRAME_MACHINE_H

#include "coframe.h"

#define FRAME_BEGIN(f) switch ((f)->line) { case 0:
#define FRAME_END(f) }
#define WAIT(f, call)                                                                              \
    do {                                                                                           \
        (f)->rc = (call);                                                                          \
        if ((f)->rc == CORO_PENDING) {                                                             \
            (f)->line = __LINE__;                                                                  \
            return NULL;                                                                           \
        case __LINE__:                                                                             \
            (f)->rc = coro_frame_resumed(&(f)->value);                                             \
        }                                                                                          \
    } while (0)

#endif
