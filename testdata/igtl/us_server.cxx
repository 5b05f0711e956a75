// us_server: an OpenIGTLink server built on the real library (Debian's
// libopenigtlink-dev), standing in for a PLUS server in front of a probe.
// It sends 8-bit grey frames read from a raw file as IMAGE messages from
// device "Image_Reference", with the given pixel spacing, at fps, looping;
// between frames it also sends the probe's pose as a TRANSFORM, as PLUS
// does, which a client that wants images must skip.
//
//   us_server <port> <fps> <width> <height> <spacing_x_mm> <spacing_y_mm> <frames.raw>
//
// It serves one client at a time and waits for the next when one leaves.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <vector>

#include "igtlImageMessage.h"
#include "igtlOSUtil.h"
#include "igtlServerSocket.h"
#include "igtlTransformMessage.h"

int main(int argc, char* argv[]) {
  if (argc != 8) {
    std::cerr << "usage: " << argv[0] << " <port> <fps> <width> <height> <spacing_x_mm> <spacing_y_mm> <frames.raw>" << std::endl;
    return 2;
  }
  int port = atoi(argv[1]);
  double fps = atof(argv[2]);
  int w = atoi(argv[3]), h = atoi(argv[4]);
  float sx = atof(argv[5]), sy = atof(argv[6]);
  FILE* fp = fopen(argv[7], "rb");
  if (!fp) {
    std::cerr << "cannot open " << argv[7] << std::endl;
    return 2;
  }
  std::vector<unsigned char> all;
  unsigned char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, fp)) > 0) all.insert(all.end(), buf, buf + n);
  fclose(fp);
  size_t frameSize = (size_t)w * h;
  size_t frames = all.size() / frameSize;
  if (frames == 0) {
    std::cerr << "no frames in " << argv[7] << std::endl;
    return 2;
  }

  igtl::ServerSocket::Pointer server = igtl::ServerSocket::New();
  if (server->CreateServer(port) < 0) {
    std::cerr << "cannot listen on " << port << std::endl;
    return 1;
  }
  std::cout << "listening " << port << " frames " << frames << std::endl << std::flush;
  int interval = (int)(1000.0 / fps);
  for (;;) {
    igtl::Socket::Pointer sock;
    sock = server->WaitForConnection(1000);
    if (sock.IsNull()) continue;
    for (size_t i = 0;; i++) {
      igtl::ImageMessage::Pointer img = igtl::ImageMessage::New();
      int size[] = {w, h, 1};
      float spacing[] = {sx, sy, 1.0f};
      img->SetDimensions(size);
      img->SetSpacing(spacing);
      img->SetScalarType(igtl::ImageMessage::TYPE_UINT8);
      img->SetDeviceName("Image_Reference");
      int offset[] = {0, 0, 0};
      img->SetSubVolume(size, offset);
      img->AllocateScalars();
      memcpy(img->GetScalarPointer(), &all[(i % frames) * frameSize], frameSize);
      igtl::Matrix4x4 m;
      igtl::IdentityMatrix(m);
      img->SetMatrix(m);
      igtl::TimeStamp::Pointer ts = igtl::TimeStamp::New();
      ts->GetTime();
      img->SetTimeStamp(ts);
      img->Pack();
      if (sock->Send(img->GetPackPointer(), img->GetPackSize()) == 0) break;

      igtl::TransformMessage::Pointer tr = igtl::TransformMessage::New();
      tr->SetDeviceName("ProbeToTracker");
      m[0][3] = (float)i;
      tr->SetMatrix(m);
      tr->Pack();
      if (sock->Send(tr->GetPackPointer(), tr->GetPackSize()) == 0) break;
      igtl::Sleep(interval);
    }
    sock->CloseSocket();
    std::cout << "client left" << std::endl << std::flush;
  }
}
