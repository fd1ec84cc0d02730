from shop.views import place_order

urlpatterns += [path("shop/orders/", place_order)]
