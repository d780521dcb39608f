% rebase('base', title='Log in', user=None)
<section class="login-card">
  <h1>Log in to your gallery</h1>
  % if notice:
  <p class="notice" role="status">{{notice}}</p>
  % end
  % if message:
  <p class="error" role="alert">{{message}}</p>
  % end
  <form method="post" action="/login" class="login-form">
    <input type="hidden" name="csrf_token" value="{{csrf}}">
    <input type="hidden" name="next" value="{{next}}">
    <label for="user_id">User ID</label>
    <input id="user_id" name="user_id" value="{{user_id}}" required maxlength="64" autocomplete="username"
           autocapitalize="off" spellcheck="false" autofocus>
    <p class="help">The name given to <code>aigen generate --user</code>.</p>
    % if require_code:
    <label for="access_code">Access code</label>
    <input id="access_code" name="access_code" type="password" required autocomplete="current-password"
           autocapitalize="characters" spellcheck="false" placeholder="XXXX-XXXX-XXXX">
    <p class="help">This gallery can be reached from other machines, so it asks for your access code too.
      Get one with <code>aigen user code YOUR_ID</code> on the machine that runs it, or open the link in
      your notification.</p>
    % end
    <button type="submit" class="primary">Log in</button>
  </form>
</section>
