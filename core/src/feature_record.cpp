#include "sightline/host/feature_record.hpp"

#include <sightline/serialize.hpp>

#include <cstring>
#include <sstream>

namespace sightline::host {

namespace {
constexpr char kMagic[4] = {'S', 'L', 'F', 'R'};
constexpr std::size_t kHeader = 4 + 4 + 8 + 8;
}  // namespace

Bytes encode_record(const FeatureRecord& r) {
    std::ostringstream payload;
    BinaryWriter w(payload);
    w.string(r.signature);
    w.string(r.item_id);
    w.pod<std::int32_t>(r.image_size.width);
    w.pod<std::int32_t>(r.image_size.height);
    w.features(r.features);
    std::string p = payload.str();

    std::ostringstream out;
    BinaryWriter h(out);
    h.bytes(kMagic, 4);
    h.pod<std::uint32_t>(kFeatureRecordVersion);
    h.pod<std::uint64_t>(p.size());
    h.pod<std::uint64_t>(fnv1a64(p.data(), p.size()));
    h.bytes(p.data(), p.size());
    std::string s = out.str();
    return Bytes(s.begin(), s.end());
}

FeatureRecord decode_record(std::span<const std::uint8_t> b, const std::string& what) {
    auto fail = [&](const std::string& why) -> FeatureRecord { throw Error(ErrorCode::data_loss, what + ": " + why); };
    if (b.size() < kHeader) return fail("too short to be a feature record (" + std::to_string(b.size()) + " bytes)");
    if (std::memcmp(b.data(), kMagic, 4) != 0) return fail("not a feature record (bad magic)");
    std::uint32_t version;
    std::uint64_t size, sum;
    std::memcpy(&version, &b[4], 4);
    std::memcpy(&size, &b[8], 8);
    std::memcpy(&sum, &b[16], 8);
    if (version != kFeatureRecordVersion)
        return fail("record version " + std::to_string(version) + ", this host reads version " +
                    std::to_string(kFeatureRecordVersion));
    if (size != b.size() - kHeader)
        return fail("payload is " + std::to_string(b.size() - kHeader) + " bytes, header says " + std::to_string(size));
    if (fnv1a64(&b[kHeader], size) != sum) return fail("checksum mismatch (the record is damaged)");

    std::string payload(reinterpret_cast<const char*>(&b[kHeader]), size);
    std::istringstream in(payload);
    BinaryReader r(in, what);
    FeatureRecord rec;
    try {
        rec.signature = r.string();
        rec.item_id = r.string();
        rec.image_size.width = r.pod<std::int32_t>();
        rec.image_size.height = r.pod<std::int32_t>();
        rec.features = r.features();
    } catch (const Error&) {
        throw;
    } catch (const std::exception& e) {
        return fail(std::string("unreadable: ") + e.what());
    }
    if (rec.image_size.width <= 0 || rec.image_size.height <= 0) return fail("implausible image size");
    return rec;
}

}  // namespace sightline::host
