// Header-only build test: the vision headers compile alone (Eigen, nlohmann/json and the system
// include path, where Debian's libstb-dev puts stb/stb_image.h; no DEEPSEEK_HAVE_LIBJPEG, so JPEG
// takes the stb_image path), and name the decoder they would use.
#include <deepseek/vision/image.hpp>
#include <deepseek/vision/preprocess.hpp>
#include <deepseek/vision/resample.hpp>

#include <cstring>

int main() { return std::strcmp(deepseek::vision::jpeg_decoder(), "stb_image") == 0 ? 0 : 1; }
