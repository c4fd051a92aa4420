// A planted bug for the fuzz_selftest_crash test: a heap overflow on inputs that start with '!'.
// libFuzzer finds such an input within moments; the test passes only if run_fuzzer.sh then reports
// the ASan error and fails, which proves that a real finding fails a fuzz test.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size >= 2 && data[0] == '!') {
        auto copy = std::make_unique<std::uint8_t[]>(size);
        std::memcpy(copy.get(), data, size);
        volatile std::uint8_t sink = copy[size];  // one past the end
        (void)sink;
    }
    return 0;
}
