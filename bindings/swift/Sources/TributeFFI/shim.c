// SwiftPM needs a source file in a C target; the target's real content is the header
// (include/TributeFFI.h) and the static library libtribute_ffi.a that Package.swift links.
#include "TributeFFI.h"
