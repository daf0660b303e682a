// Links libtribute_ffi.a through the generated header, as SwiftPM does, and calls a few
// functions through the C ABI the Swift bindings use. Run by bindings/swift/test.sh on
// machines without Swift (GCC lacks clang's nullability qualifiers: build with
// -D_Nullable= -D_Nonnull=).
#include <stdio.h>
#include <string.h>

#include "TributeFFI.h"

static RustBuffer string_arg(const char *s) {
    RustCallStatus status = {0};
    ForeignBytes bytes = {(int32_t)strlen(s), (const uint8_t *)s};
    return ffi_tribute_ffi_rustbuffer_from_bytes(bytes, &status);
}

static void free_buffer(RustBuffer b) {
    RustCallStatus status = {0};
    ffi_tribute_ffi_rustbuffer_free(b, &status);
}

int main(void) {
    if (ffi_tribute_ffi_uniffi_contract_version() == 0) {
        fprintf(stderr, "link_check: no contract version\n");
        return 1;
    }
    RustCallStatus status = {0};
    RustBuffer version = uniffi_tribute_ffi_fn_func_version(&status);
    if (status.code != 0 || version.len == 0) {
        fprintf(stderr, "link_check: version() failed (status %d)\n", status.code);
        return 1;
    }
    printf("link_check: libtribute_ffi %.*s\n", (int)version.len, (const char *)version.data);
    free_buffer(version);

    // A bad key is a TributeError (status 1, CALL_ERROR) with a serialized error, not a crash.
    RustCallStatus bad = {0};
    uniffi_tribute_ffi_fn_constructor_signer_from_hex(string_arg("0x1234"), &bad);
    if (bad.code != 1 || bad.errorBuf.len == 0) {
        fprintf(stderr, "link_check: a bad key gave status %d, not a TributeError\n", bad.code);
        return 1;
    }
    free_buffer(bad.errorBuf);

    RustCallStatus ok = {0};
    uint64_t signer = uniffi_tribute_ffi_fn_constructor_signer_random(&ok);
    // Methods take ownership of a handle: pass a clone, as the Swift bindings do.
    uint64_t clone = uniffi_tribute_ffi_fn_clone_signer(signer, &ok);
    RustBuffer address = uniffi_tribute_ffi_fn_method_signer_address(clone, &ok);
    if (ok.code != 0 || address.len != 42) {
        fprintf(stderr, "link_check: Signer.random().address() failed\n");
        return 1;
    }
    printf("link_check: Signer.random().address() = %.*s\n", (int)address.len, (const char *)address.data);
    free_buffer(address);
    uniffi_tribute_ffi_fn_free_signer(signer, &ok);
    return ok.code;
}
