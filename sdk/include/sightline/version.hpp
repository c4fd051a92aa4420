#pragma once
// ABI rule (after Triton's): adding to an interface or the manifest raises the minor version;
// changing or removing anything raises the major. The host accepts a plugin with an equal major,
// a minor no greater than its own, and an identical build id.

#define SIGHTLINE_STRINGIFY_(x) #x
#define SIGHTLINE_STRINGIFY(x) SIGHTLINE_STRINGIFY_(x)

#ifndef SIGHTLINE_ABI_MAJOR
#define SIGHTLINE_ABI_MAJOR 1
#endif
#ifndef SIGHTLINE_ABI_MINOR
#define SIGHTLINE_ABI_MINOR 3
#endif
#define SIGHTLINE_SDK_VERSION "0.3.0"

// Boost.DLL promises no ABI across compilers or standard libraries, so both are part of the id.
#if defined(__clang__)
#define SIGHTLINE_COMPILER_ID "clang-" SIGHTLINE_STRINGIFY(__clang_major__)
#elif defined(__GNUC__)
#define SIGHTLINE_COMPILER_ID "gcc-" SIGHTLINE_STRINGIFY(__GNUC__)
#else
#define SIGHTLINE_COMPILER_ID "unknown-compiler"
#endif
#if defined(_GLIBCXX_RELEASE)
#define SIGHTLINE_STDLIB_ID "libstdc++-" SIGHTLINE_STRINGIFY(_GLIBCXX_RELEASE)
#elif defined(_LIBCPP_VERSION)
#define SIGHTLINE_STDLIB_ID "libc++-" SIGHTLINE_STRINGIFY(_LIBCPP_VERSION)
#else
#define SIGHTLINE_STDLIB_ID "unknown-stdlib"
#endif
#define SIGHTLINE_BUILD_ID SIGHTLINE_COMPILER_ID ";" SIGHTLINE_STDLIB_ID ";sdk-" SIGHTLINE_SDK_VERSION

#if defined(__GNUC__)
#define SIGHTLINE_API __attribute__((visibility("default")))
#else
#define SIGHTLINE_API
#endif
