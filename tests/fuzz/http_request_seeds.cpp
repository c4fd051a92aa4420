// Writes the seed corpus of fuzz_http_request into the directory given as its argument: requests
// the transport sees in practice (raw images, multipart recognitions with client fields, gallery
// uploads with metadata) and some near misses, in the format of http_request_input.hpp.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace {

// What fuzz_http_request decodes (format: http_request_input.hpp).
struct FormPart {
    std::string name, filename, content_type, content;
};
struct Upload {
    std::string content_type;
    bool multipart = false;
    std::string body;
    std::vector<FormPart> parts;
};

void put_field(std::string& out, const std::string& s, int length_bytes) {
    for (int i = 0; i < length_bytes; ++i) out += static_cast<char>((s.size() >> (8 * i)) & 0xFF);
    out += s;
}

std::string encode_input(const Upload& up, const std::string& query) {
    std::string out(1, up.multipart ? '\x01' : '\x00');
    put_field(out, up.content_type, 2);
    put_field(out, query, 2);
    if (up.multipart) {
        for (const auto& p : up.parts) {
            put_field(out, p.name, 2);
            put_field(out, p.filename, 2);
            put_field(out, p.content_type, 2);
            put_field(out, p.content, 4);
        }
    } else {
        out += up.body;
    }
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const std::string jpeg("\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xFF\xD9", 24);
    const std::string png("\x89PNG\r\n\x1A\n\x00\x00\x00\x0DIHDR\x00\x00\x4E\x20\x00\x00\x4E\x20\x08\x02\x00\x00\x00", 29);
    const std::string webp("RIFF\x20\x00\x00\x00WEBPVP8 ", 16);

    struct Seed {
        Upload up;
        std::string query;
    };
    std::vector<Seed> seeds;
    auto raw = [&](std::string type, std::string body, std::string query = {}) {
        Upload u;
        u.content_type = std::move(type);
        u.body = std::move(body);
        seeds.push_back({std::move(u), std::move(query)});
    };
    auto multi = [&](std::vector<FormPart> parts, std::string query = {}) {
        Upload u;
        u.multipart = true;
        u.content_type = "multipart/form-data; boundary=xyz";
        u.parts = std::move(parts);
        seeds.push_back({std::move(u), std::move(query)});
    };
    raw("image/jpeg", jpeg);
    raw("image/png; charset=binary", png, "pos_x=10&pos_y=20");
    raw("application/octet-stream", webp, "limit=5&after=item-1");
    raw("IMAGE/JPEG", jpeg, "client_id=c%201");
    raw("application/x-www-form-urlencoded", "a=b");
    raw("Bearer s3cret-token", "", "limit=0");
    raw("[::1]:8080", "BM");
    raw("", "");
    multi({{"image", "photo.jpg", "image/jpeg", jpeg}, {"pos_x", "", "", "12.5"}, {"pos_y", "", "", "40"}});
    multi({{"image", "cover.png", "image/png", png}, {"metadata", "", "application/json", R"({"title":"Hills","year":2016})"}});
    multi({{"image", "x", "text/plain", jpeg}, {"metadata", "", "", "[[[[{\"a\":1}]]]]"}});
    multi({{"pos_x", "", "", "\xC3\xA9t\xC3\xA9"}, {"image", "", "", webp}, {"image", "", "", jpeg}});

    int n = 0;
    for (const auto& s : seeds) {
        const std::string path = std::string(argv[1]) + "/seed" + std::to_string(++n);
        std::ofstream out(path, std::ios::binary);
        const std::string bytes = encode_input(s.up, s.query);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        if (!out) {
            std::fprintf(stderr, "cannot write %s\n", path.c_str());
            return 1;
        }
    }
    return 0;
}
